"""Guidewire and catheter failures: fade, gaps, blur, displacement, duplication, catheter loss."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from casiqa.phantom.anatomy import clinical_name
from casiqa.phantom.failures.base import Failure, FailureKind, View, adverb, bbox_of_pixels, register
from casiqa.phantom.geometry import normals, smooth_noise
from casiqa.phantom.raster import tube_layer
from casiqa.phantom.render import Scene

METRIC = "guidewire_visibility"


def _wire_part(t0: float, t1: float) -> str:
    mid = 0.5 * (t0 + t1)
    if t1 - t0 > 0.7:
        return "guidewire"
    return "proximal wire" if mid < 0.33 else "mid wire" if mid < 0.66 else "distal wire"


def _wire_box(scene: Scene, t0: float, t1: float) -> list[float]:
    sel = (scene.wire.t >= t0) & (scene.wire.t <= t1)
    return bbox_of_pixels(scene.wire.index[sel], scene.size)


def _sample_section(kind: str):
    def sample(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
        t0 = float(rng.uniform(0.0, 0.55)) if rng.random() < 0.7 else 0.0
        where = f"{_wire_part(t0, 1.0)} in the {clinical_name(scene.devices.wire_branch)}"
        return Failure(kind, severity, where, _wire_box(scene, t0, 1.0), {"t0": t0, "seed": int(rng.integers(2**31))})
    return sample


def _fade(view: View, scene: Scene, f: Failure) -> None:
    ramp = np.clip((scene.wire.t - f.params["t0"]) / 0.08, 0.0, 1.0)  # fades in over 8 % of the wire
    view.wire_weight *= 1.0 - 0.92 * f.severity * ramp


def _sample_gaps(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
    starts = np.sort(rng.uniform(0.1, 0.9, size=4))
    where = f"guidewire in the {clinical_name(scene.devices.wire_branch)}"
    drawn = starts[: _gap_count(severity)]                # the box holds the gaps drawn, not the starts left unused
    return Failure("wire_gaps", severity, where, _wire_box(scene, drawn[0], min(drawn[-1] + _gap_length(severity), 1.0)),
                   {"starts": [float(s) for s in starts]})


def _gap_count(severity: float) -> int:
    return 1 + int(np.floor(3.999 * severity))            # 1..4 gaps


def _gap_length(severity: float) -> float:
    return 0.015 + 0.06 * severity                        # each gap, share of the wire


def _gaps(view: View, scene: Scene, f: Failure) -> None:
    n, length = _gap_count(f.severity), _gap_length(f.severity)
    for s in f.params["starts"][:n]:
        view.wire_weight[(scene.wire.t >= s) & (scene.wire.t < s + length)] = 0.0


# a blurred wire's Gaussian sigma, px at 512 px: BLUR_SIGMA[0] + BLUR_SIGMA[1] * severity
BLUR_SIGMA = (0.6, 4.0)


def _blur(view: View, scene: Scene, f: Failure) -> None:
    sigma = (BLUR_SIGMA[0] + BLUR_SIGMA[1] * f.severity) * scene.size / 512
    view.wire = ndimage.gaussian_filter(view.wire, sigma)  # mass-preserving: wider and fainter
    view.wire *= 1.0 - 0.4 * f.severity                  # generators also lose the wire's density


# How far a displaced or ghost wire lies from the true one at full offset, px at 512 px.
OFFSET_PX = {"wire_displacement": lambda severity: 3.0 + 25.0 * severity,
             "wire_duplication": lambda severity: 5.0 + 15.0 * severity}


def _offset_px(scene: Scene, f: Failure) -> float:
    return OFFSET_PX[f.kind](f.severity) * scene.size / 512


def _shifted_wire(scene: Scene, f: Failure, amplitude_px: float):
    wire = scene.devices.wire
    rng = np.random.default_rng(f.params["seed"])
    t = np.linspace(0.0, 1.0, len(wire))
    profile = np.clip((t - f.params["t0"]) / 0.15, 0.0, 1.0) * (1.0 + 0.3 * smooth_noise(rng, len(wire), 80))
    path = wire + normals(wire) * (amplitude_px * profile)[:, None] * f.params["side"]
    return tube_layer(path, np.full(len(path), scene.devices.wire_radius), scene.shape)


def _sample_offset(kind: str):
    base = _sample_section(kind)

    def sample(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
        f = base(rng, scene, severity)
        f.params["side"] = float(rng.choice([-1.0, 1.0]))
        # the box covers where the generator drew the wire as well as where it should be
        moved = _shifted_wire(scene, f, _offset_px(scene, f))
        drawn = bbox_of_pixels(moved.index[moved.t >= f.params["t0"]], scene.size)
        f.bbox = [min(f.bbox[0], drawn[0]), min(f.bbox[1], drawn[1]), max(f.bbox[2], drawn[2]), max(f.bbox[3], drawn[3])]
        return f
    return sample


def _displace(view: View, scene: Scene, f: Failure) -> None:
    moved = _shifted_wire(scene, f, _offset_px(scene, f))
    # The displaced part is drawn where the generator put it; the true part stays only proximal.
    view.wire_weight *= np.clip((f.params["t0"] - scene.wire.t) / 0.15 + 1.0, 0.0, 1.0)
    view.extra_wires.append((moved, 1.0))


def _duplicate(view: View, scene: Scene, f: Failure) -> None:
    ghost = _shifted_wire(scene, f, _offset_px(scene, f))
    view.extra_wires.append((ghost, 0.25 + 0.65 * f.severity))
    view.wire_weight *= 1.0 - 0.3 * f.severity


def _sample_catheter(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
    return Failure("catheter_loss", severity, "guiding catheter", bbox_of_pixels(scene.catheter_wall.index, scene.size))


def _catheter(view: View, scene: Scene, f: Failure) -> None:
    view.catheter_scale *= 1.0 - 0.95 * f.severity


for kind in (
    FailureKind("wire_fade", METRIC, "weights", 1.0, _sample_section("wire_fade"), _fade,
                lambda f: f"{f.location} {adverb(f.severity)} faded", phrase="faded",
                plain="guidewire {adverb} faded"),
    FailureKind("wire_gaps", METRIC, "weights", 0.95, _sample_gaps, _gaps,
                lambda f: f"{f.location} {adverb(f.severity)} broken by "
                          f"{_gap_count(f.severity)} gap(s)", phrase="broken by",
                plain="guidewire {adverb} broken by gaps"),
    FailureKind("wire_blur", METRIC, "layers", 0.9, _sample_section("wire_blur"), _blur,
                lambda f: f"guidewire {adverb(f.severity)} blurred", phrase="blurred",
                plain="guidewire {adverb} blurred"),
    FailureKind("wire_displacement", METRIC, "weights", 0.95, _sample_offset("wire_displacement"), _displace,
                lambda f: f"{f.location} {adverb(f.severity)} displaced outside the vessel", phrase="displaced",
                plain="guidewire {adverb} displaced outside the vessel"),
    FailureKind("wire_duplication", METRIC, "weights", 0.85, _sample_offset("wire_duplication"), _duplicate,
                lambda f: f"{f.location} {adverb(f.severity)} duplicated by a ghost wire", phrase="duplicated",
                plain="guidewire {adverb} duplicated by a ghost wire"),
    FailureKind("catheter_loss", METRIC, "weights", 0.8, _sample_catheter, _catheter,
                lambda f: f"guiding catheter {adverb(f.severity)} lost", phrase="lost",
                plain="guiding catheter {adverb} lost"),
):
    register(kind)
