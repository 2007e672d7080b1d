"""What a generator failure is, how it is registered, and the view it edits.

A failure has a kind (one of the registered kinds below), a severity in [0, 1], a location in
clinical words and the box it acts on. Everything random about it (which branch, where the
blotches go) is drawn when it is sampled and kept in `params`, so re-applying it with another
severity changes only its strength: that is what makes every metric monotone in severity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from casiqa.metrics import kind_title, severity_adverb
from casiqa.phantom.raster import TubeLayer
from casiqa.phantom.render import Scene


@dataclass
class Failure:
    kind: str
    severity: float                 # 0 (absent) .. 1 (worst this kind gets)
    location: str                   # clinical words: "distal LAD", "upper-left field"
    bbox: list[float]               # [x0, y0, x1, y1] in 0..1 of the frame: where it acts
    params: dict = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return KINDS[self.kind].metric

    def to_json(self) -> dict:
        out = asdict(self)
        out["metric"] = self.metric
        out["severity"] = round(float(self.severity), 4)
        out["bbox"] = [round(float(v), 4) for v in self.bbox]
        return out


@dataclass
class View:
    """The mutable parts of one synthetic image while failures are applied, stage by stage."""

    vessel_weights: list[np.ndarray]       # per branch, per pixel iodine concentration (1 = full)
    wire_weight: np.ndarray                # per wire pixel attenuation factor (tip > 1)
    extra_wires: list[tuple[TubeLayer, float]] = field(default_factory=list)
    catheter_scale: float = 1.0
    iodine: np.ndarray | None = None       # [H, W] dense, after the "weights" stage
    wire: np.ndarray | None = None         # [H, W] dense, after the "weights" stage
    display: np.ndarray | None = None      # [H, W] grey in [0, 1], after exposure


STAGES = ("weights", "layers", "display")


@dataclass(frozen=True)
class FailureKind:
    name: str
    metric: str
    stage: str                                                     # one of STAGES
    weight: float                                                  # damage at severity 1 (see scoring)
    sample: Callable[[np.random.Generator, Scene, float], Failure]  # (rng, scene, severity)
    apply: Callable[[View, Scene, Failure], None]
    describe: Callable[[Failure], str]
    # words every description of this kind holds and no other kind's of its metric does once longer
    # phrases are taken out (facts.named_kinds reads an explanation back into kinds with them)
    phrase: str = ""
    # the description from the kind and its severity alone ("guidewire {adverb} broken by gaps"): what
    # an assessor's findings carry, with no place, branch name or count, which the findings do not
    plain: str = ""

    def fact(self, failure: Failure) -> str:
        """The explanation fact: the kind's title first, then the description ('wire gaps: guidewire
        in the LAD moderately broken by 2 gap(s)'). A model writes left to right; beginning with
        what its findings name lets it state the kind before it has to guess where."""
        return f"{kind_title(self.name)}: {self.describe(failure)}"

    def plain_fact(self, severity: float) -> str:
        """The fact as a model's findings can support it: the kind's title, then `plain` with the
        severity's third as an adverb, as the prompt's findings grade it ('wire gaps: guidewire
        moderately broken by gaps'). Where the failure is, the findings do not say, so neither does
        the fact: a model would have to guess it (docs/training-log.md, sixth session)."""
        return f"{kind_title(self.name)}: {self.plain.format(adverb=severity_adverb(severity))}"


KINDS: dict[str, FailureKind] = {}


def register(kind: FailureKind) -> FailureKind:
    if kind.stage not in STAGES:
        raise ValueError(f"unknown stage {kind.stage!r}")
    KINDS[kind.name] = kind
    return kind


def adverb(severity: float) -> str:
    """Severity in words, for explanation facts."""
    return "slightly" if severity < 0.34 else "moderately" if severity < 0.67 else "severely"


REGION_ROWS = ("upper", "middle", "lower")
REGION_COLS = ("left", "central", "right")


def region_name(x: float, y: float) -> str:
    """Normalised point -> 'upper-left field', 'central field', 'lower field', ..."""
    row = REGION_ROWS[min(int(y * 3), 2)]
    col = REGION_COLS[min(int(x * 3), 2)]
    if row == "middle" and col == "central":
        return "central field"
    if row == "middle":
        return f"{col} field"
    if col == "central":
        return f"{row} field"
    return f"{row}-{col} field"


def bbox_of_pixels(index: np.ndarray, size: int) -> list[float]:
    if index.size == 0:
        return [0.0, 0.0, 1.0, 1.0]
    y, x = np.divmod(index, size)
    return [x.min() / size, y.min() / size, (x.max() + 1) / size, (y.max() + 1) / size]


def bbox_of_disc(cx: float, cy: float, r: float) -> list[float]:
    """Box of a disc in normalised coordinates, clipped to the frame."""
    return [max(cx - r, 0.0), max(cy - r, 0.0), min(cx + r, 1.0), min(cy + r, 1.0)]


def soft_disc(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """[H, W] soft mask of a disc (normalised centre and radius), Gaussian-feathered edge."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    d = np.hypot(xx - cx, yy - cy)
    return np.clip((radius - d) / (0.25 * radius + 1e-6) + 0.5, 0.0, 1.0).astype(np.float32)
