"""Vessel-tree failures: side-branch and distal deletion, fading, discontinuities, blur, haze."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from casiqa.phantom.failures.base import (
    Failure,
    FailureKind,
    View,
    adverb,
    bbox_of_disc,
    bbox_of_pixels,
    region_name,
    register,
    soft_disc,
)
from casiqa.phantom.geometry import arclength
from casiqa.phantom.render import Scene

METRIC = "branch_discernibility"


def _segment(t0: float) -> str:
    return "proximal" if t0 < 0.2 else "mid" if t0 < 0.55 else "distal"


def _box(scene: Scene, branches: list[int], t0: float = 0.0, t1: float = 1.0, whole: list[int] = ()) -> list[float]:
    """The box of the branches' stretch t0..t1 and of the `whole` branches (their full length)."""
    idx = [scene.vessels[i].index[(scene.vessels[i].t >= t0) & (scene.vessels[i].t <= t1)] for i in branches]
    idx += [scene.vessels[i].index for i in whole]
    return bbox_of_pixels(np.concatenate(idx) if idx else np.zeros(0, np.int64), scene.size)


def _side_order(rng: np.random.Generator, scene: Scene) -> list[int]:
    side = [i for i, b in enumerate(scene.tree.branches) if not b.main]
    return [int(i) for i in rng.permutation(side)]


def _deleted_count(severity: float, available: int) -> int:
    return min(available, 1 + int(np.floor(severity * 3.999)))  # 1..4 branches


def deletion_severity(count: int) -> float:
    """The severity a deletion of `count` side branches records: the middle of the drawn severities
    that delete that many (1..4 -> 0.125, 0.375, 0.625, 0.875; none -> 0). The image shows the
    count and nothing else of the drawn severity, so the truth must not carry the rest: with the
    drawn severity kept, one deleted branch was rated anywhere from 4.05 to 5 for the same picture
    (and a scene with fewer side branches than drawn was rated for branches it still showed)."""
    return max(count - 0.5, 0.0) / 4


def _sample_deletion(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
    order = _side_order(rng, scene)
    gone = order[: _deleted_count(severity, len(order))]
    names = ", ".join(scene.tree.branches[i].name for i in gone)
    removed = sorted({j for i in gone for j in scene.tree.descendants(i)})   # each branch goes with its twigs
    return Failure("branch_deletion", deletion_severity(len(gone)), names, _box(scene, [], whole=removed), {"order": order})


def _delete(view: View, scene: Scene, f: Failure) -> None:
    order = f.params["order"]
    for i in order[: _deleted_count(f.severity, len(order))]:
        for j in scene.tree.descendants(i):
            view.vessel_weights[j][:] = 0.0


def _mains(scene: Scene) -> list[int]:
    return [i for i, b in enumerate(scene.tree.branches) if b.main and b.code != "LM"]


# A distal deletion cuts its vessel where the part lost with it (the vessel beyond the cut and the
# branches leaving there, inside the collimated field, by contrast) is DISTAL_SHARE of the whole
# tree's contrast in the image. Cut as a share of the vessel's length (12-72 %), the same severity
# had removed anything from 0.3 % to 17 % of the image's tree (a thin tail with nothing on it, or a
# trunk with its side branches): severity ranked that share at only 0.58 (61 rows). A side branch
# goes whole with the cut before its origin, so the loss moves in steps: the cut nearest the drawn
# share is taken, and the severity recorded is the one of the share it loses (as a branch deletion
# records its count's), so that the truth stays a function of the picture.
DISTAL_SHARE = (0.02, 0.28)  # DISTAL_SHARE[0] + DISTAL_SHARE[1] * severity of the tree's contrast
DISTAL_CUT = (0.05, 0.97)    # the cut stays within this share of the vessel's length


def distal_share(severity: float) -> float:
    """The share of the image's vessel tree (by contrast) a distal deletion of `severity` removes."""
    return DISTAL_SHARE[0] + DISTAL_SHARE[1] * float(np.clip(severity, 0.0, 1.0))


def _fov_contrast(scene: Scene, i: int) -> np.ndarray:
    layer = scene.vessels[i]
    return layer.thickness * scene.fov.ravel()[layer.index]


def _cuts(scene: Scene, i: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The cuts vessel i allows (shares of its length, ascending, each losing more than the next),
    the contrast each loses, and the whole tree's contrast, all inside the field."""
    n = len(scene.tree.branches[i].points)
    at, lost = [scene.vessels[i].t], [_fov_contrast(scene, i)]
    for j, b in enumerate(scene.tree.branches):       # a side branch goes when the cut lies before its origin
        if b.parent == i:
            at.append(np.array([b.parent_index / max(n - 1, 1)]))
            lost.append(np.array([sum(_fov_contrast(scene, d).sum() for d in scene.tree.descendants(j))]))
    total = float(sum(_fov_contrast(scene, j).sum() for j in range(len(scene.vessels))))
    where, group = np.unique(np.concatenate(at), return_inverse=True)
    step = np.bincount(group, weights=np.concatenate(lost), minlength=len(where))
    beyond = np.cumsum(step[::-1])[::-1]                   # lost by a cut at where[j]
    keep = (where >= DISTAL_CUT[0]) & (where <= DISTAL_CUT[1]) & (step > 1e-6 * total)
    return where[keep], beyond[keep], max(total, 1e-9)


def _nearest(where: np.ndarray, beyond: np.ndarray, total: float, severity: float) -> int:
    """Index of the cut whose loss is nearest the severity's share of the tree (the more distal of two as near)."""
    miss = np.abs(beyond / total - distal_share(severity))
    return int(np.flatnonzero(miss <= miss.min() + 1e-12)[-1])


def _cut_point(scene: Scene, i: int, severity: float) -> float:
    """Where on vessel i (share of its length) a distal deletion of `severity` cuts: the cut whose
    loss is nearest its share of the tree."""
    where, beyond, total = _cuts(scene, i)
    return float(where[_nearest(where, beyond, total, severity)]) if len(where) else DISTAL_CUT[0]


def _distal_severity(scene: Scene, i: int, severity: float) -> float:
    """The severity whose share of the tree the cut drawn for `severity` loses (at least 0.01)."""
    where, beyond, total = _cuts(scene, i)
    if not len(where):
        return float(severity)
    lost = float(beyond[_nearest(where, beyond, total, severity)]) / total
    return float(np.clip((lost - DISTAL_SHARE[0]) / DISTAL_SHARE[1], 0.01, 1.0))


def _sample_distal(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
    i = int(rng.choice(_mains(scene)))
    severity = _distal_severity(scene, i, severity)
    cut = _cut_point(scene, i, severity)
    name = scene.tree.branches[i].name
    return Failure("distal_deletion", severity, f"{_segment(cut)} {name}", _box(scene, [i], cut, whole=_cut_off(scene, i, cut)),
                   {"branch": i})


def _cut_off(scene: Scene, i: int, cut: float) -> list[int]:
    """The branches a distal deletion of vessel i from `cut` (share of its length) removes with it:
    its side branches leaving beyond the cut, and theirs."""
    n = len(scene.tree.branches[i].points)
    return [d for j, b in enumerate(scene.tree.branches) if b.parent == i and b.parent_index / max(n - 1, 1) >= cut
            for d in scene.tree.descendants(j)]


def _distal(view: View, scene: Scene, f: Failure) -> None:
    i = f.params["branch"]
    cut, layer = _cut_point(scene, i, f.severity), scene.vessels[i]
    view.vessel_weights[i] *= np.clip((cut - layer.t) / 0.02, 0.0, 1.0)
    for d in _cut_off(scene, i, cut):
        view.vessel_weights[d][:] = 0.0


def _sample_fading(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
    i = int(rng.integers(1 if len(scene.tree.branches) > 1 else 0, len(scene.tree.branches)))
    t0 = float(rng.uniform(0.0, 0.6))
    where = f"{_segment(t0)} {scene.tree.branches[i].name}"
    return Failure("branch_fading", severity, where, _box(scene, scene.tree.descendants(i), t0), {"branch": i, "t0": t0})


def _fade(view: View, scene: Scene, f: Failure) -> None:
    i, t0 = f.params["branch"], f.params["t0"]
    ramp = np.clip((scene.vessels[i].t - t0) / 0.1, 0.0, 1.0)
    view.vessel_weights[i] *= 1.0 - 0.9 * f.severity * ramp
    for j in scene.tree.descendants(i)[1:]:  # what hangs off a faded vessel fades with it
        view.vessel_weights[j] *= 1.0 - 0.9 * f.severity


# A discontinuity draws its gaps where a gap shows: on the stretch of a main vessel at least
# GAP_MIN_RADIUS wide (px at 512; ~2x the wire, which rides in the lumen and would fill a narrower
# gap) inside the collimated field, each gap GAP_PX long along the centre line. Gaps drawn as a
# share of the vessel's length, anywhere on it, had fallen on sub-pixel distal stretches that show
# nothing (a severe discontinuity removing 0.5 % of its vessel's contrast, rated 1.7) and a mild one
# on a 16 px-wide proximal RCA had shown a plain cut (rated 5): the image showed neither severity.
GAP_MIN_RADIUS = 2.0
GAP_PX = (6.0, 18.0)         # each gap: GAP_PX[0] + GAP_PX[1] * severity px at 512 px
GAP_SPACING = 6.0            # px at 512 of vessel kept between two gaps, so that the count shows


def _gap_count(severity: float) -> int:
    return 1 + int(np.floor(severity * 2.999))


def _visible_run(scene: Scene, i: int) -> tuple[float, float, float]:
    """The longest stretch of vessel i where a gap shows, as arc lengths (start, end) in px along
    its centre line, and the centre line's whole length."""
    b, k = scene.tree.branches[i], scene.size / 512.0
    arc = arclength(b.points)
    x = np.clip(np.round(b.points[:, 0]).astype(int), 0, scene.size - 1)
    y = np.clip(np.round(b.points[:, 1]).astype(int), 0, scene.size - 1)
    ok = (b.radii >= GAP_MIN_RADIUS * k) & (scene.fov[y, x] > 0.5) & (arc >= 0.05 * arc[-1])
    if not ok.any():                                   # no stretch wide enough: the widest part, whatever it is
        ok = b.radii >= 0.8 * b.radii.max()
    best, start = (0, 0), None
    for j, v in enumerate(np.append(ok, False)):
        if v and start is None:
            start = j
        elif not v and start is not None:
            best, start = max(best, (start, j - 1), key=lambda r: arc[r[1]] - arc[r[0]]), None
    return float(arc[best[0]]), float(arc[best[1]]), float(max(arc[-1], 1e-6))


def _gaps(scene: Scene, i: int, severity: float, offsets: list[float]) -> list[list[float]]:
    """The drawn gaps of vessel i as [t0, t1] shares of its length: the visible run split in one
    slot per gap, each gap at its offset (0..1) within its slot, kept GAP_SPACING from the next."""
    k = scene.size / 512.0
    lo, hi, total = _visible_run(scene, i)
    count, length = _gap_count(severity), (GAP_PX[0] + GAP_PX[1] * severity) * k
    slot = (hi - lo) / count
    out = []
    for j, u in enumerate(offsets[:count]):
        a = lo + j * slot + u * max(slot - length - GAP_SPACING * k, 0.0)
        end = lo + (j + 1) * slot - (GAP_SPACING * k if j < count - 1 else 0.0)   # a short run: shorter gaps, still apart
        out.append([round(a / total, 6), round(max(min(a + length, end), a + 1.0) / total, 6)])
    return out


def _sample_discontinuity(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
    i = int(rng.choice(_mains(scene)))
    offsets = [float(s) for s in (rng.uniform(0.1, 0.85, size=3) - 0.1) / 0.75]   # the same draws as before: other rows unchanged
    gaps = _gaps(scene, i, severity, offsets)
    where = f"{_segment(gaps[0][0])} {scene.tree.branches[i].name}"
    return Failure("discontinuity", severity, where, _box(scene, [i], gaps[0][0], gaps[-1][1]),
                   {"branch": i, "offsets": offsets})


def _discontinuity(view: View, scene: Scene, f: Failure) -> None:
    i = f.params["branch"]
    layer = scene.vessels[i]
    for t0, t1 in _gaps(scene, i, f.severity, f.params["offsets"]):
        view.vessel_weights[i][(layer.t >= t0) & (layer.t < t1)] = 0.0


def _sample_region(kind: str, lo: float, hi: float):
    def sample(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
        cx, cy = (float(v) for v in rng.uniform(0.25, 0.75, size=2))
        radius = lo + (hi - lo) * severity
        return Failure(kind, severity, region_name(cx, cy), bbox_of_disc(cx, cy, radius), {"cx": cx, "cy": cy})
    return sample


# blurred vessels' Gaussian sigma, px at 512 px: BLUR_SIGMA[0] + BLUR_SIGMA[1] * severity
BLUR_SIGMA = (1.0, 5.0)


def _vessel_blur(view: View, scene: Scene, f: Failure) -> None:
    sigma = (BLUR_SIGMA[0] + BLUR_SIGMA[1] * f.severity) * scene.size / 512
    mask = soft_disc(scene.size, f.params["cx"], f.params["cy"], 0.2 + 0.3 * f.severity)
    view.iodine = mask * ndimage.gaussian_filter(view.iodine, sigma) + (1.0 - mask) * view.iodine


def _sample_haze(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
    return Failure("haze", severity, "whole vessel tree", [0.0, 0.0, 1.0, 1.0])


def _haze(view: View, scene: Scene, f: Failure) -> None:
    view.iodine *= 1.0 - 0.85 * f.severity


for kind in (
    FailureKind("branch_deletion", METRIC, "weights", 0.95, _sample_deletion, _delete,
                lambda f: f"{f.location} missing", phrase="missing",
                plain="side branches missing, the tree {adverb} pruned"),
    FailureKind("distal_deletion", METRIC, "weights", 0.95, _sample_distal, _distal,
                lambda f: f"{f.location} onwards missing (~{distal_share(f.severity):.0%} of the vessel tree)",
                phrase="onwards missing", plain="vessel {adverb} cut short, distal part onwards missing"),
    FailureKind("branch_fading", METRIC, "weights", 0.9, _sample_fading, _fade,
                lambda f: f"{f.location} {adverb(f.severity)} faded", phrase="faded",
                plain="vessel {adverb} faded"),
    FailureKind("discontinuity", METRIC, "weights", 0.9, _sample_discontinuity, _discontinuity,
                lambda f: f"{f.location} interrupted by {_gap_count(f.severity)} gap(s)", phrase="interrupted",
                plain="vessel {adverb} interrupted by gaps"),
    FailureKind("vessel_blur", METRIC, "layers", 0.85, _sample_region("vessel_blur", 0.2, 0.5), _vessel_blur,
                lambda f: f"vessels {adverb(f.severity)} blurred and merging over the {f.location}", phrase="blurred",
                plain="vessels {adverb} blurred and merging"),
    FailureKind("haze", METRIC, "layers", 0.9, _sample_haze, _haze,
                lambda f: f"vessel contrast {adverb(f.severity)} reduced by haze over the whole tree", phrase="haze",
                plain="vessel contrast {adverb} reduced by haze over the whole tree"),
):
    register(kind)
