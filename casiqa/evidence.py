"""Evidence regions from a metric's map (pure functions).

The map says where the model saw what drove the metric's score: the pixel path's damage map
(how damaged each place looks, trained on the failures' places; the assessor's choice where the
model has one) or MUST's routing map (how much each visual token was routed to the metric's
branch). Places above the map's median are its evidence; connected groups of the strongest of
them become boxes, weighted by their share of the excess mass. A map whose mass is scattered so
that no group reaches `min_share` still names its strongest group: a score always has a "where
to look", and the small weight says how little it stands out. Boxes from a damage map also carry
the map's peak inside them (`box_damage`): how damaged that place looks, which a routing map
cannot say.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def evidence_boxes(weights: np.ndarray, max_boxes: int = 3, min_share: float = 0.05) -> list[dict]:
    """weights [h, w] one metric's map (damage or routing) -> up to `max_boxes` boxes
    {"box": (x0, y0, x1, y1) in 0..1, "weight": share of excess mass}, strongest first; those
    under `min_share` dropped unless none reaches it, when the strongest alone is kept."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.size == 0:
        raise ValueError(f"expected a 2-D evidence map, got shape {weights.shape}")
    excess = np.maximum(weights - np.median(weights), 0.0)
    total = excess.sum()
    if total <= 1e-9:
        return []  # a uniform map: no region stands out
    labels, n = ndimage.label(excess >= 0.5 * excess.max())
    h, w = weights.shape
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        share = float(excess[labels == i].sum() / total)
        ys, xs = sl
        box = tuple(round(v, 4) for v in (xs.start / w, ys.start / h, xs.stop / w, ys.stop / h))
        boxes.append({"box": box, "weight": round(min(share, 1.0), 4)})
    boxes.sort(key=lambda b: -b["weight"])
    kept = [b for b in boxes if b["weight"] >= min_share]
    return (kept or boxes[:1])[:max_boxes]


def box_damage(damage: np.ndarray, boxes: list[dict]) -> list[dict]:
    """A metric's damage map [h, w] (0..1, the map the boxes came from) and its `evidence_boxes` ->
    the boxes, each with "damage": the map's peak inside it. The weight says how much a box stands
    out from the rest of its map (a clean image still has a strongest place); the damage says how
    damaged the place looks, on the scale the map was trained on (a failure's severity there)."""
    damage = np.asarray(damage, dtype=np.float64)
    h, w = damage.shape
    out = []
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        ys = slice(int(round(y0 * h)), max(int(round(y1 * h)), int(round(y0 * h)) + 1))
        xs = slice(int(round(x0 * w)), max(int(round(x1 * w)), int(round(x0 * w)) + 1))
        peak = float(np.clip(damage[ys, xs].max(), 0.0, 1.0))
        out.append({**b, "damage": round(peak, 4)})
    return out


def upsample(weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A token-grid map [h, w] resized to an image's [H, W] (nearest, for overlays)."""
    h, w = weights.shape
    ys = (np.arange(shape[0]) * h // shape[0]).clip(0, h - 1)
    xs = (np.arange(shape[1]) * w // shape[1]).clip(0, w - 1)
    return weights[ys][:, xs]
