"""Non-anatomical structures that generators produce: hallucinated vessels, ghost contours,
grid/checkerboard upsampling patterns, blotches, streaks, banding, noise bursts and the
'plastic' over-smoothed look."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from casiqa.phantom.failures.base import (
    Failure,
    FailureKind,
    View,
    adverb,
    bbox_of_disc,
    region_name,
    register,
    soft_disc,
)
from casiqa.phantom.geometry import grow_curve
from casiqa.phantom.raster import tube_layer
from casiqa.phantom.render import Scene

METRIC = "artifact_interference"


def _count(severity: float, most: int) -> int:
    return 1 + int(np.floor(severity * (most - 0.001)))


def _sample_at(kind: str, lo: float, hi: float):
    """A failure centred somewhere in the field, acting over a disc of radius lo..hi (by severity)."""
    def sample(rng: np.random.Generator, scene: Scene, severity: float) -> Failure:
        cx, cy = (float(v) for v in rng.uniform(0.2, 0.8, size=2))
        radius = lo + (hi - lo) * severity
        return Failure(kind, severity, region_name(cx, cy), bbox_of_disc(cx, cy, radius),
                       {"cx": cx, "cy": cy, "seed": int(rng.integers(2**31))})
    return sample


def _hallucinate(view: View, scene: Scene, f: Failure) -> None:
    rng = np.random.default_rng(f.params["seed"])
    k = scene.size / 512
    for n in range(4):  # draw all four, keep the first `count`: geometry independent of severity
        start = (np.array([f.params["cx"], f.params["cy"]]) + rng.normal(0, 0.08, 2)) * scene.size
        pts = grow_curve(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(60, 160) * k,
                         wander=0.3, tortuosity=rng.uniform(0.1, 0.4), wavelength=rng.uniform(18, 34) * k)
        r = np.linspace(rng.uniform(2.5, 4.0), rng.uniform(1.5, 2.5), len(pts)) * k
        if n < _count(f.severity, 4):
            layer = tube_layer(pts, r, scene.shape)
            view.iodine += (0.4 + 0.6 * f.severity) * layer.dense(scene.shape)


def _ghost(view: View, scene: Scene, f: Failure) -> None:
    rng = np.random.default_rng(f.params["seed"])
    shift = rng.uniform(6, 18, size=2) * rng.choice([-1, 1], size=2) * scene.size / 512
    mask = soft_disc(scene.size, f.params["cx"], f.params["cy"], 0.25 + 0.45 * f.severity)
    view.iodine += (0.15 + 0.55 * f.severity) * mask * ndimage.shift(view.iodine, shift[::-1], order=1)


def _grid(view: View, scene: Scene, f: Failure) -> None:
    rng = np.random.default_rng(f.params["seed"])
    period = int(rng.choice([4, 8])) * max(int(round(scene.size / 512)), 1)
    yy, xx = np.mgrid[0 : scene.size, 0 : scene.size]
    pattern = ((xx // (period // 2) + yy // (period // 2)) % 2) * 2.0 - 1.0  # checkerboard, +-1
    mask = soft_disc(scene.size, f.params["cx"], f.params["cy"], 0.15 + 0.35 * f.severity)
    view.display += (0.01 + 0.07 * f.severity) * mask * pattern.astype(np.float32)


def _blotches(view: View, scene: Scene, f: Failure) -> None:
    rng = np.random.default_rng(f.params["seed"])
    yy, xx = np.mgrid[0 : scene.size, 0 : scene.size].astype(np.float32) / scene.size
    for n in range(6):
        c = np.array([f.params["cx"], f.params["cy"]]) + rng.normal(0, 0.15, 2)
        sigma, sign = rng.uniform(0.015, 0.05), rng.choice([-1.0, 1.0])
        if n < _count(f.severity, 6):
            blob = np.exp(-0.5 * ((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / sigma**2)
            view.display += sign * (0.05 + 0.2 * f.severity) * blob


def _streaks(view: View, scene: Scene, f: Failure) -> None:
    rng = np.random.default_rng(f.params["seed"])
    yy, xx = np.mgrid[0 : scene.size, 0 : scene.size].astype(np.float32) / scene.size
    for n in range(4):
        angle, width = rng.uniform(0, np.pi), rng.uniform(0.8, 2.5) / 512
        c = np.array([f.params["cx"], f.params["cy"]]) + rng.normal(0, 0.1, 2)
        d = np.abs((xx - c[0]) * np.sin(angle) - (yy - c[1]) * np.cos(angle))
        if n < _count(f.severity, 4):
            view.display += rng.choice([-1.0, 1.0]) * (0.04 + 0.18 * f.severity) * np.exp(-0.5 * (d / width) ** 2)


def _banding(view: View, scene: Scene, f: Failure) -> None:
    rng = np.random.default_rng(f.params["seed"])
    yy, xx = np.mgrid[0 : scene.size, 0 : scene.size].astype(np.float32) / scene.size
    angle, period = rng.uniform(0, np.pi), rng.uniform(12, 40) / 512
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    view.display += (0.01 + 0.07 * f.severity) * np.sign(np.sin(2 * np.pi * phase)) * 0.5 * (1 + np.sin(np.pi * phase / 3))


def _noise_burst(view: View, scene: Scene, f: Failure) -> None:
    rng = np.random.default_rng(f.params["seed"])
    mask = soft_disc(scene.size, f.params["cx"], f.params["cy"], 0.1 + 0.25 * f.severity)
    noise = rng.standard_normal(scene.shape).astype(np.float32)
    view.display += (0.02 + 0.13 * f.severity) * mask * noise


SMOOTH_SIGMA = 3.0  # px at 512 px: the over-smoothing's Gaussian, before posterising


def smooth_mask(scene: Scene, f: Failure) -> np.ndarray:
    """[H, W] in 0..1: how strongly an over-smoothing failure replaces the display at each pixel."""
    return (0.3 + 0.7 * f.severity) * soft_disc(scene.size, f.params["cx"], f.params["cy"], 0.2 + 0.5 * f.severity)


def _smooth(view: View, scene: Scene, f: Failure) -> None:
    mask = smooth_mask(scene, f)
    levels = 64 - 40 * f.severity  # posterised grey levels over the window: waxy plateaus, no texture
    plastic = np.round(ndimage.gaussian_filter(view.display, SMOOTH_SIGMA * scene.size / 512) * levels) / levels
    view.display = mask * plastic + (1.0 - mask) * view.display


def _where(f: Failure) -> str:
    return f"over the {f.location}"


for kind in (
    FailureKind("hallucinated_vessels", METRIC, "layers", 0.95, _sample_at("hallucinated_vessels", 0.12, 0.3),
                _hallucinate, lambda f: f"{_count(f.severity, 4)} hallucinated vessel-like line(s) {_where(f)}",
                phrase="hallucinated vessel",
                plain="{adverb} visible hallucinated vessel-like lines"),
    FailureKind("ghost_contours", METRIC, "layers", 0.85, _sample_at("ghost_contours", 0.25, 0.7), _ghost,
                lambda f: f"{adverb(f.severity)} visible ghost contours of the vessels {_where(f)}", phrase="ghost contour",
                plain="{adverb} visible ghost contours of the vessels"),
    FailureKind("grid_pattern", METRIC, "display", 0.9, _sample_at("grid_pattern", 0.15, 0.5), _grid,
                lambda f: f"{adverb(f.severity)} visible grid artefact {_where(f)}", phrase="grid",
                plain="{adverb} visible grid artefact"),
    FailureKind("blotches", METRIC, "display", 0.85, _sample_at("blotches", 0.15, 0.35), _blotches,
                lambda f: f"{_count(f.severity, 6)} blotch(es) {_where(f)}", phrase="blotch",
                plain="{adverb} visible blotches"),
    FailureKind("streaks", METRIC, "display", 0.85, _sample_at("streaks", 0.5, 0.5), _streaks,
                lambda f: f"{_count(f.severity, 4)} streak(s) across the {f.location}", phrase="streak",
                plain="{adverb} visible streaks"),
    FailureKind("banding", METRIC, "display", 0.8, _sample_at("banding", 0.71, 0.71), _banding,
                lambda f: f"{adverb(f.severity)} visible banding across the frame", phrase="banding",
                plain="{adverb} visible banding across the frame"),
    FailureKind("noise_burst", METRIC, "display", 0.85, _sample_at("noise_burst", 0.1, 0.35), _noise_burst,
                lambda f: f"{adverb(f.severity)} strong noise burst {_where(f)}", phrase="noise burst",
                plain="{adverb} visible noise burst"),
    FailureKind("over_smoothing", METRIC, "display", 0.8, _sample_at("over_smoothing", 0.2, 0.7), _smooth,
                lambda f: f"{adverb(f.severity)} plastic over-smoothed texture {_where(f)}", phrase="over-smoothed",
                plain="{adverb} plastic over-smoothed texture"),
):
    register(kind)
