"""Centre-line curves: growth by a heading random walk, resampling, and placement helpers."""

from __future__ import annotations

import numpy as np


def smooth_noise(rng: np.random.Generator, n: int, correlation: float) -> np.ndarray:
    """Zero-mean, unit-std noise of length n, low-passed over ~`correlation` samples."""
    white = rng.standard_normal(n + 4 * int(correlation) + 1)
    width = max(int(correlation), 1)
    kernel = np.exp(-0.5 * (np.arange(-2 * width, 2 * width + 1) / width) ** 2)
    out = np.convolve(white, kernel / np.sqrt((kernel**2).sum()), mode="valid")[:n]
    return out


def grow_curve(
    rng: np.random.Generator,
    start: np.ndarray,
    heading: float,
    length: float,
    *,
    bend: float = 0.0,
    wander: float = 0.15,
    tortuosity: float = 0.0,
    wavelength: float = 30.0,
    step: float = 1.0,
) -> np.ndarray:
    """Points [N, 2] (x, y, px) of a curve grown from `start` along `heading` (radians, y down).

    The heading turns steadily by `bend` (radians per 100 px), drifts by smooth noise of total
    std `wander` (radians), and oscillates with an amplitude `tortuosity` (radians) that grows
    towards the distal end: distal coronary segments are the tortuous ones.
    """
    n = max(int(length / step), 2)
    s = np.arange(n) * step
    t = s / max(length, 1.0)
    phase = rng.uniform(0, 2 * np.pi)
    theta = (
        heading
        + bend * s / 100.0
        + wander * smooth_noise(rng, n, correlation=40.0 / step)
        + tortuosity * (0.3 + 0.7 * t) * np.sin(2 * np.pi * s / wavelength + phase)
    )
    steps = step * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return start[None, :] + np.concatenate([np.zeros((1, 2)), np.cumsum(steps[:-1], axis=0)])


def arclength(points: np.ndarray) -> np.ndarray:
    """Cumulative arc length [N] along a polyline [N, 2]."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def resample(points: np.ndarray, values: np.ndarray | None, step: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample a polyline (and per-point values) at a uniform arc-length step."""
    s = arclength(points)
    grid = np.arange(0.0, s[-1] + 1e-9, step) if s[-1] > 0 else np.zeros(1)
    out = np.stack([np.interp(grid, s, points[:, 0]), np.interp(grid, s, points[:, 1])], axis=1)
    vals = None if values is None else np.interp(grid, s, values)
    return out, vals


def heading_at(points: np.ndarray, index: int) -> float:
    """Direction (radians) of the polyline at a point index."""
    i0, i1 = max(index - 3, 0), min(index + 3, len(points) - 1)
    d = points[i1] - points[i0]
    return float(np.arctan2(d[1], d[0]))


def normals(points: np.ndarray) -> np.ndarray:
    """Unit normals [N, 2] of a polyline."""
    d = np.gradient(points, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    return np.stack([-d[:, 1], d[:, 0]], axis=1)
