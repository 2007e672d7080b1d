"""Generator-like failures, their sampling per case and their application to a scene."""

from __future__ import annotations

import numpy as np

from casiqa.metrics import METRICS
from casiqa.phantom.config import PhantomConfig
from casiqa.phantom.failures import artifacts, branches, guidewire  # noqa: F401  (registers the kinds)
from casiqa.phantom.failures.base import KINDS, STAGES, Failure, FailureKind, View
from casiqa.phantom.failures.derived import derived_failures, is_derived
from casiqa.phantom.raster import mask_of
from casiqa.phantom.render import Scene, attenuation, contrast_iodine, expose

__all__ = ["KINDS", "Failure", "FailureKind", "extra_wire_mask", "kinds_of", "render", "render_view", "sample_failures",
           "wire_base_weight"]


def kinds_of(metric: str) -> list[str]:
    return [name for name, kind in KINDS.items() if kind.metric == metric]


def sample_failures(rng: np.random.Generator, scene: Scene, cfg: PhantomConfig) -> list[Failure]:
    """Failures for one synthetic image, drawn independently per metric family.

    Per family: none with probability `clean_fraction`; else one kind with severity U(0.05, 1)
    and, with probability `second_failure`, a second kind with severity U(0.05, 0.6). Families
    are drawn independently, so the three metrics vary independently across a set, except where
    one family's failure harms another's structures: then the records it implies follow the drawn
    ones (failures/derived.py: an over-smoothing blurs the wire and vessels under it). Drawing
    them takes nothing from `rng`.
    """
    out: list[Failure] = []
    for metric in METRICS:
        if rng.random() < cfg.clean_fraction:
            continue
        names = [str(n) for n in rng.permutation(kinds_of(metric))]
        out.append(KINDS[names[0]].sample(rng, scene, float(rng.uniform(0.05, 1.0))))
        if rng.random() < cfg.second_failure:
            out.append(KINDS[names[1]].sample(rng, scene, float(rng.uniform(0.05, 0.6))))
    return out + derived_failures(out, scene)


def wire_base_weight(scene: Scene) -> np.ndarray:
    """Per-pixel wire attenuation factor: the distal radio-opaque tip is ~1.6x denser."""
    tip_start = 1.0 - scene.devices.tip_length / max(len(scene.devices.wire), 1)
    return np.where(scene.wire.t >= tip_start, 1.6, 1.0)


def render_view(scene: Scene, rng: np.random.Generator, cfg: PhantomConfig, *, contrast: bool, wire: bool,
                failures: list[Failure] = ()) -> np.ndarray:
    """One displayed image [H, W] in [0, 1]: live (contrast=False), reference (wire=False) or
    synthetic (both, with failures applied stage by stage)."""
    return render(scene, rng, cfg, contrast=contrast, wire=wire, failures=failures).display


def extra_wire_mask(view: View, scene: Scene) -> np.ndarray:
    """Boolean [H, W]: where a rendered view has a wire that is not the true one (a displaced or
    ghost wire's lumen, away from the true wire's)."""
    return mask_of([layer for layer, _ in view.extra_wires], scene.shape) & ~mask_of([scene.wire], scene.shape)


def render(scene: Scene, rng: np.random.Generator, cfg: PhantomConfig, *, contrast: bool, wire: bool,
           failures: list[Failure] = ()) -> View:
    """`render_view`, returning the view: its display and what the failures drew."""
    view = View(
        vessel_weights=[np.full(layer.thickness.shape, 1.0 if contrast else 0.0) for layer in scene.vessels],
        wire_weight=wire_base_weight(scene) if wire else np.zeros(scene.wire.thickness.shape),
    )
    by_stage = {stage: [f for f in failures if KINDS[f.kind].stage == stage and not is_derived(f)] for stage in STAGES}
    for f in by_stage["weights"]:
        KINDS[f.kind].apply(view, scene, f)
    view.iodine = contrast_iodine(scene, view.vessel_weights)
    view.wire = scene.wire.dense(scene.shape, view.wire_weight)
    for layer, weight in view.extra_wires:
        view.wire += layer.dense(scene.shape, weight)
    for f in by_stage["layers"]:
        KINDS[f.kind].apply(view, scene, f)
    att = attenuation(scene, view.iodine, view.wire, catheter_fill=1.0 if contrast else 0.0,
                      catheter_scale=view.catheter_scale)
    view.display = expose(scene, att, rng, cfg)
    for f in by_stage["display"]:
        KINDS[f.kind].apply(view, scene, f)
    view.display = np.clip(view.display, 0.0, 1.0).astype(np.float32)
    return view
