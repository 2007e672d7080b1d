"""Tubes to path-length maps: how many px of a vessel (or wire) an X-ray crosses at each pixel.

A ray at distance d from the axis of a cylinder of radius r crosses 2 * sqrt(r^2 - d^2) of it.
Tubes thinner than a pixel would alias, so the radius is widened to `MIN_RADIUS` and the
thickness scaled by (r / r_eff)^2, which keeps the projected cross-section (the attenuation
integral) of the thin tube; detector blur then shapes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from casiqa.phantom.geometry import arclength, resample

MIN_RADIUS = 0.9  # px


@dataclass
class TubeLayer:
    """Sparse path-length map of one tube on an H x W grid."""

    index: np.ndarray      # [M] flat pixel indices
    thickness: np.ndarray  # [M] path length in px
    t: np.ndarray          # [M] position of the nearest centre-line point, 0 (start) .. 1 (end)
    inside: np.ndarray     # [M] bool, pixel centre within the true lumen (for masks)

    def dense(self, shape: tuple[int, int], weight: np.ndarray | float = 1.0) -> np.ndarray:
        """Dense [H, W] map of thickness * weight (weight scalar or [M])."""
        out = np.bincount(self.index, weights=self.thickness * weight, minlength=shape[0] * shape[1])
        return out.reshape(shape).astype(np.float32)


def tube_layer(points: np.ndarray, radii: np.ndarray, shape: tuple[int, int]) -> TubeLayer:
    """Rasterise a tube with centre line `points` [N, 2] (x, y) and radii [N] onto `shape`."""
    h, w = shape
    pts, rad = resample(points, radii, step=0.5)
    total = max(arclength(pts)[-1], 1e-6)
    t_of_point = arclength(pts) / total
    r_eff = np.maximum(rad, MIN_RADIUS)
    reach = float(r_eff.max()) + 1.0
    x0, y0 = np.floor(pts.min(axis=0) - reach).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + reach).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    empty = TubeLayer(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, bool))
    if x1 <= x0 or y1 <= y0:
        return empty
    # Candidate pixels: near the rasterised centre line (cheap), then exact distances by k-d tree.
    centre = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    ix = np.round(pts[:, 0]).astype(int) - x0
    iy = np.round(pts[:, 1]).astype(int) - y0
    ok = (ix >= 0) & (iy >= 0) & (ix < x1 - x0) & (iy < y1 - y0)
    centre[iy[ok], ix[ok]] = True
    if not centre.any():
        return empty
    near = ndimage.distance_transform_edt(~centre) <= reach + 0.75
    cy, cx = np.nonzero(near)
    dist, nearest = cKDTree(pts).query(np.stack([cx + x0, cy + y0], axis=1).astype(np.float64))
    r = r_eff[nearest]
    keep = dist < r
    scale = (rad[nearest] / r) ** 2
    thickness = 2.0 * np.sqrt(np.maximum(r**2 - dist**2, 0.0)) * scale
    index = (cy + y0) * w + (cx + x0)
    inside = dist <= np.maximum(rad[nearest], 0.5)
    return TubeLayer(index[keep], thickness[keep], t_of_point[nearest][keep], inside[keep])


def mask_of(layers: list[TubeLayer], shape: tuple[int, int]) -> np.ndarray:
    """Boolean [H, W] union of the lumens of several tubes."""
    out = np.zeros(shape[0] * shape[1], dtype=bool)
    for layer in layers:
        out[layer.index[layer.inside]] = True
    return out.reshape(shape)
