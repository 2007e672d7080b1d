"""Real-image sanity suite: degrade real angiograms along known severity ladders and check that
each metric's score falls with its own ladder and stays put on the others.

    python -m evals.sanity --model models/cas-iqa-tiny --real ../shared/real/coronary40 --out results/sanity

Ladders (severity 0, .25, .5, .75, 1), per real image with its vessel mask:
- guidewire_visibility: a wire is drawn along the main vessel's centre line; live = the image with
  its vessels inpainted away plus the wire; reference = the image; synthetic = image + the wire,
  faded and broken more with severity.
- branch_discernibility: vessel pixels beyond a geodesic-distance quantile from the widest point
  (the proximal end) are inpainted away: the distal share removed grows with severity.
- artifact_interference: the phantom's grid, streak, blotch and noise-burst artefacts at that severity.
Reports per metric the Spearman correlation between severity and score (pooled over images and
per image), and how much the other two metrics move between severity 0 and 1. Orientation: each
ladder's middle rung scored in the eight flips and rotations of its images (target, live and
reference turned together); per metric, how far the score spreads over them and how often the
level changes. A reader rotating a frame should not get another verdict. Evidence: on the rungs
whose damage has a place (the wire's gaps, the removed distal vessels), how often the metric's
strongest evidence box holds a damaged pixel, against a box of its size placed at random; and on
every ladder, whether its metric's highest box damage (the damage map's peak in a box) grows with
the severity and tells the worst rung from the intact one.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.sparse import csgraph, csr_matrix
from scipy.stats import spearmanr
from tqdm import tqdm

from casiqa.inputs import AssessInput
from casiqa.metrics import METRICS
from casiqa.phantom.calibrate import DEFAULT_REAL, load_real

SEVERITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
ARTEFACTS = ("grid_pattern", "streaks", "blotches", "noise_burst")


@dataclass
class SanityConfig:
    model: str = ""
    real: str = str(DEFAULT_REAL)
    out: str = "results/sanity"
    max_images: int = 0


def inpaint(image: np.ndarray, mask: np.ndarray, sigma: float = 6.0) -> np.ndarray:
    """Masked pixels replaced by a normalised-convolution blur of the unmasked ones."""
    hole = ndimage.binary_dilation(mask, iterations=2)
    keep = (~hole).astype(float)
    est = ndimage.gaussian_filter(image * keep, sigma) / np.maximum(ndimage.gaussian_filter(keep, sigma), 1e-6)
    return np.where(hole, est, image)


def _graph(mask: np.ndarray):
    """8-connected pixel graph of a mask: (symmetric adjacency, ys, xs of its nodes)."""
    idx = -np.ones(mask.shape, int)
    ys, xs = np.nonzero(mask)
    idx[ys, xs] = np.arange(len(ys))
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        y2, x2 = ys + dy, xs + dx
        inside = (y2 < mask.shape[0]) & (x2 >= 0) & (x2 < mask.shape[1])
        j = idx[y2[inside], x2[inside]]
        linked = j >= 0
        rows.append(np.nonzero(inside)[0][linked])
        cols.append(j[linked])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    g = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ys), len(ys)))
    return g + g.T, ys, xs


def geodesic_from_widest(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic distance map (inf off the vessel) from the widest vessel pixel, and the main path
    (pixel coordinates [K, 2] as x, y) from there to the farthest pixel."""
    labels, n = ndimage.label(mask)
    largest = labels == (1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1)))))
    g, ys, xs = _graph(largest)
    edt = ndimage.distance_transform_edt(largest)
    start = int(np.argmax(edt[ys, xs]))
    dist, pred = csgraph.shortest_path(g, indices=start, return_predecessors=True, unweighted=True)
    dmap = np.full(mask.shape, np.inf)
    dmap[ys, xs] = dist
    # the full mask's other components count as far away (distal)
    dmap[mask & ~largest] = np.nanmax(dist[np.isfinite(dist)]) if np.isfinite(dist).any() else 0
    node, path = int(np.argmax(np.where(np.isfinite(dist), dist, -1))), []
    while node >= 0 and node != start:
        path.append((xs[node], ys[node]))
        node = pred[node]
    path.append((xs[start], ys[start]))
    pts = np.array(path[::-1], float)
    if len(pts) > 5:  # smooth the staircase of pixel steps
        pts = np.stack([ndimage.uniform_filter1d(pts[:, i], 5, mode="nearest") for i in range(2)], axis=1)
    return dmap, pts


def _gaps(layer, severity: float) -> np.ndarray:
    """Which of the wire `layer`'s pixels a severity breaks away ([M] bool): up to three gaps, at
    0.2, 0.45 and 0.7 along it, each 8 % of it long at full severity."""
    cut = np.zeros(layer.t.shape, bool)
    for start in (0.2, 0.45, 0.7)[: int(np.ceil(3 * severity))]:
        cut |= (layer.t >= start) & (layer.t < start + 0.08 * severity)
    return cut


def wire_layer(shape, path: np.ndarray):
    """The guidewire along `path` rasterised once (casiqa.phantom.raster.TubeLayer), for its rungs."""
    from casiqa.phantom.raster import tube_layer

    return tube_layer(path, np.full(len(path), 0.8), shape)


def wire_map(layer, shape, severity: float) -> np.ndarray:
    """Darkening of the guidewire `layer` (wire_layer), faded and broken by severity."""
    weight = np.full(layer.t.shape, 1.0 - 0.9 * severity)
    weight[_gaps(layer, severity)] = 0.0
    return ndimage.gaussian_filter(layer.dense(shape, weight), 0.6)


def wire_gaps(layer, shape, severity: float) -> np.ndarray:
    """Where `wire_map` breaks the wire at a severity: a mask of its gaps (empty at 0)."""
    out = np.zeros(shape[0] * shape[1], bool)
    out[layer.index[_gaps(layer, severity)]] = True
    return out.reshape(shape)


def ladders(image: np.ndarray, mask: np.ndarray, k: int) -> dict[str, list[AssessInput]]:
    """Per metric, its ladder's inputs, severity 0 to 1 (`ladder_cases` without the places)."""
    return ladder_cases(image, mask, k)[0]


def ladder_cases(image: np.ndarray, mask: np.ndarray, k: int):
    """Per metric, its ladder's inputs (severity 0 to 1) and per rung where the damage is, a mask of
    the image or None: the wire's gaps, the removed vessels (as cut from the target, two pixels
    wider); the artefacts cover the frame, so None."""
    background = inpaint(image, mask)
    dmap, path = geodesic_from_widest(mask)
    finite = dmap[np.isfinite(dmap)]
    out: dict[str, list[AssessInput]] = {m: [] for m in METRICS}
    places: dict[str, list[np.ndarray | None]] = {m: [] for m in METRICS}
    wire = wire_layer(image.shape, path)
    live = np.clip(background - 0.3 * wire_map(wire, image.shape, 0.0), 0, 1)
    for s in SEVERITIES:
        wired = np.clip(image - 0.3 * wire_map(wire, image.shape, s), 0, 1)
        out["guidewire_visibility"].append(AssessInput(wired, live=live, reference=image, name=f"wire {s}"))
        gaps = wire_gaps(wire, image.shape, s)
        places["guidewire_visibility"].append(gaps if gaps.any() else None)
        cut = np.quantile(finite, 1.0 - 0.7 * s) if s > 0 else np.inf
        removed = ndimage.binary_dilation(mask & (dmap > cut), iterations=2)
        pruned = np.where(removed, background, image)
        out["branch_discernibility"].append(AssessInput(pruned, live=background, reference=image, name=f"branch {s}"))
        places["branch_discernibility"].append(removed if removed.any() else None)
        out["artifact_interference"].append(AssessInput(_artefact(image, ARTEFACTS[k % len(ARTEFACTS)], s, k),
                                                        live=background, reference=image, name=f"artefact {s}"))
        places["artifact_interference"].append(None)
    return out, places


def box_on_place(box, place: np.ndarray, rng: np.random.Generator, draws: int = 20) -> tuple[bool, float, float]:
    """An evidence box (x0, y0, x1, y1 as fractions of the image) against a mask of where the damage
    is -> (the box holds a damaged pixel, the share of `draws` boxes of its size placed at random
    in the frame that do, the share of the box's area inside the damage's bounding box)."""
    h, w = place.shape
    x0, y0, x1, y1 = box
    bw, bh = max(1, round((x1 - x0) * w)), max(1, round((y1 - y0) * h))
    # a summed-area table: the damaged pixels in any box in O(1)
    sat = np.pad(place.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def holds(c0: int, r0: int) -> bool:
        c1, r1 = min(w, c0 + bw), min(h, r0 + bh)
        return sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0] > 0

    hit = holds(int(x0 * w), int(y0 * h))
    chance = float(np.mean([holds(int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1)))
                            for _ in range(draws)]))
    ys, xs = np.nonzero(place)
    px0, px1, py0, py1 = xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h
    overlap = max(0.0, min(x1, px1) - max(x0, px0)) * max(0.0, min(y1, py1) - max(y0, py0))
    return hit, chance, overlap / max((x1 - x0) * (y1 - y0), 1e-9)


def evidence_summary(found: dict[str, list[tuple[bool, float, float]]]) -> dict:
    """Per metric, over the rungs with a place and an evidence box (`box_on_place` each): how often
    the strongest box holds a damaged pixel, how often a box of its size at random would, and its
    mean share inside the damage's bounding box."""
    from evals.scoring import hit_summary

    return {m: hit_summary(rows) for m, rows in found.items() if rows}


def damage_by_rung(peaks: dict[str, np.ndarray]) -> dict:
    """Per ladder, its metric's highest evidence-box damage [images, rungs] (NaN where the boxes
    carry none: a routing map) -> its mean per rung, the pooled Spearman of severity against it and
    the AUC of the worst rung's against the intact rung's (does the damage say the frame was
    damaged?); a ladder without any damage is left out."""
    from evals.scoring import auc

    out = {}
    for m, v in peaks.items():
        if v.size == 0 or np.isnan(v).all():
            continue
        sev = np.broadcast_to(np.asarray(SEVERITIES, dtype=float), v.shape)
        ok = ~np.isnan(v)
        apart = auc(list(v[ok[:, -1], -1]), list(v[ok[:, 0], 0]))
        out[m] = {"mean_by_rung": [round(float(np.nanmean(c)), 4) for c in v.T],
                  "pooled_srcc": round(float(spearmanr(sev[ok], v[ok])[0]), 4),
                  "auc_intact_worst": None if apart is None else round(apart, 4)}
    return out


def _artefact(image: np.ndarray, kind: str, severity: float, seed: int) -> np.ndarray:
    from casiqa.phantom.failures import KINDS, Failure
    from casiqa.phantom.failures.base import View

    if severity == 0:
        return image
    size = image.shape[0]
    scene = types.SimpleNamespace(size=size, shape=image.shape)
    view = View(vessel_weights=[], wire_weight=np.zeros(0), display=image.astype(np.float32).copy())
    KINDS[kind].apply(view, scene, Failure(kind, severity, "", [0, 0, 1, 1], {"cx": 0.5, "cy": 0.5, "seed": seed}))
    return np.clip(view.display, 0, 1)


def orientations(inp: AssessInput) -> list[AssessInput]:
    """The input in the eight flips and rotations (k quarter turns, then a left-right flip), its
    images turned together; the first is the input as given."""
    def turn(image, k, flip):
        if image is None:
            return None
        out = np.rot90(image, k)
        return np.ascontiguousarray(np.fliplr(out) if flip else out)

    return [AssessInput(turn(inp.target, k, f), live=turn(inp.live, k, f), reference=turn(inp.reference, k, f),
                        name=f"{inp.name} turn {k} flip {int(f)}") for k in range(4) for f in (False, True)]


def orientation_spread(scores: np.ndarray) -> dict:
    """scores [cases, 8 orientations, metrics] -> per metric the score's spread (max - min over the
    orientations: median, 90th percentile, largest) and the share of cases whose level changes."""
    from casiqa.metrics import level_of

    spread = scores.max(axis=1) - scores.min(axis=1)
    levels = np.vectorize(level_of)(scores)
    changed = (levels != levels[:, :1]).any(axis=1)
    return {m: {"median_spread": round(float(np.median(spread[:, j])), 4),
                "p90_spread": round(float(np.percentile(spread[:, j], 90)), 4),
                "max_spread": round(float(spread[:, j].max()), 4),
                "level_changes": round(float(changed[:, j].mean()), 4)} for j, m in enumerate(METRICS)}


def summarise(scores: dict[str, np.ndarray]) -> dict:
    """scores[ladder] [images, severities, metrics] -> per-ladder statistics."""
    out = {}
    sev = np.array(SEVERITIES)
    for j, metric in enumerate(METRICS):
        s = scores[metric]                                              # [I, S, M]
        pooled = spearmanr(np.tile(sev, len(s)), s[:, :, j].ravel()).statistic
        per_image = [spearmanr(sev, row[:, j]).statistic for row in s if np.ptp(row[:, j]) > 0]
        others = {m: round(float(np.mean(np.abs(s[:, -1, i] - s[:, 0, i]))), 4) for i, m in enumerate(METRICS) if i != j}
        out[metric] = {"pooled_srcc": round(float(pooled), 4),
                       "median_image_srcc": round(float(np.median(per_image)), 4) if per_image else None,
                       "own_drop": round(float(np.mean(s[:, 0, j] - s[:, -1, j])), 4), "others_abs_change": others}
    return out


def main(argv: list[str] | None = None) -> int:
    from casiqa.assessor import Assessor
    from casiqa.cli import parse_config
    from casiqa.paths import DEFAULT_MODEL

    (cfg,) = parse_config((SanityConfig,), argv, description=__doc__.splitlines()[0])
    real = load_real(Path(cfg.real))[: cfg.max_images or None]
    assessor = Assessor.load(cfg.model or str(DEFAULT_MODEL))
    scores = {m: [] for m in METRICS}
    turned = []                                       # [cases, 8, M]: each ladder's middle rung, turned
    found: dict[str, list] = {m: [] for m in METRICS}  # the strongest evidence box against the damage's place
    peaks: dict[str, list] = {m: [] for m in METRICS}  # [images, rungs]: the highest box damage of the ladder's metric
    rng = np.random.default_rng(0)
    for k, (_, image, mask) in enumerate(tqdm(real, desc="real images")):
        cases, places = ladder_cases(image, mask, k)
        for metric, inputs in cases.items():
            heads = assessor.heads(inputs)
            scores[metric].append([[h.score[m] for m in METRICS] for h in heads])
            j = METRICS.index(metric)
            rungs = []
            for h, place in zip(heads, places[metric], strict=True):
                boxes = h.evidence(j)
                if boxes and place is not None:
                    found[metric].append(box_on_place(boxes[0]["box"], place, rng))
                rungs.append(max((b["damage"] for b in boxes if b.get("damage") is not None), default=np.nan))
            peaks[metric].append(rungs)
            heads = assessor.heads(orientations(inputs[len(inputs) // 2]))
            turned.append([[h.score[m] for m in METRICS] for h in heads])
    arrays = {m: np.array(v) for m, v in scores.items()}
    result = {"model": cfg.model or str(DEFAULT_MODEL), "images": len(real), "severities": SEVERITIES,
              "ladders": summarise(arrays), "orientation": orientation_spread(np.array(turned)),
              "evidence": evidence_summary(found)}
    damage = damage_by_rung({m: np.array(v, dtype=float) for m, v in peaks.items()})
    if damage:
        result["evidence_damage"] = damage
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sanity.json").write_text(json.dumps(result, indent=2))
    np.savez(out / "scores.npz", **arrays)
    print("| ladder | pooled SRCC(severity, score) | median per image | own score drop | other metrics' mean abs change |")
    print("|---|---|---|---|---|")
    for m, r in result["ladders"].items():
        print(f"| {m} | {r['pooled_srcc']:.3f} | {r['median_image_srcc']} | {r['own_drop']:.3f} | {r['others_abs_change']} |")
    print("\n| metric | score spread over 8 orientations: median / p90 / max | level changes |\n|---|---|---|")
    for m, r in result["orientation"].items():
        print(f"| {m} | {r['median_spread']:.3f} / {r['p90_spread']:.3f} / {r['max_spread']:.3f} | "
              f"{100 * r['level_changes']:.0f} % |")
    print("\n| ladder | rungs | strongest box holds damage | a box of its size at random | box inside the damage's bounds |")
    print("|---|---|---|---|---|")
    for m, r in result["evidence"].items():
        print(f"| {m} | {r['n']} | {100 * r['touch']:.0f} % | {100 * r['touch_chance']:.0f} % | {100 * r['inside']:.0f} % |")
    if damage:
        from evals.report import num

        print("\n| ladder | its metric's highest box damage by rung | pooled SRCC(severity, damage) | AUC intact vs worst rung |")
        print("|---|---|---|---|")
        for m, r in damage.items():
            print(f"| {m} | {' / '.join(f'{v:.2f}' for v in r['mean_by_rung'])} | {r['pooled_srcc']:.3f} | "
                  f"{num(r['auc_intact_worst'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
