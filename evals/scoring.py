"""Per-metric agreement with bootstrap intervals, level accuracy, validity and latency (pure)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from casiqa.metrics import METRICS, level_index, says_damaged
from casiqa.stats import agreement, krcc, plcc, srcc


def bootstrap_ci(pred: np.ndarray, truth: np.ndarray, n: int, seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile intervals of SRCC, KRCC and PLCC over `n` resamples of the rows."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"srcc": [], "krcc": [], "plcc": []}
    for _ in range(n):
        idx = rng.integers(0, len(pred), len(pred))
        p, t = pred[idx], truth[idx]
        if np.ptp(p) == 0 or np.ptp(t) == 0:
            continue
        draws["srcc"].append(srcc(p, t))
        draws["krcc"].append(krcc(p, t))
        draws["plcc"].append(plcc(p, t))
    return {k: [round(float(np.percentile(v, 2.5)), 4), round(float(np.percentile(v, 97.5)), 4)] if v else [None, None]
            for k, v in draws.items()}


def level_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    p = np.array([level_index(float(np.clip(x, 1, 5))) for x in pred])
    t = np.array([level_index(float(x)) for x in truth])
    return float((p == t).mean())


def confusion(pred: np.ndarray, truth: np.ndarray) -> list[list[int]]:
    """5 x 5 counts, rows = true level, columns = predicted level."""
    out = np.zeros((5, 5), int)
    for p, t in zip(pred, truth, strict=True):
        out[level_index(float(t)), level_index(float(np.clip(p, 1, 5)))] += 1
    return out.tolist()


def metric_table(pred: np.ndarray, truth: np.ndarray, n_boot: int = 0, seed: int = 0) -> dict:
    """pred, truth [N, M] -> per metric statistics (with CIs when n_boot > 0)."""
    out = {}
    for j, m in enumerate(METRICS):
        row = {k: round(v, 4) for k, v in agreement(pred[:, j], truth[:, j]).items()}
        row["level_accuracy"] = round(level_accuracy(pred[:, j], truth[:, j]), 4)
        row["n"] = int(len(pred))
        if n_boot:
            row["ci95"] = bootstrap_ci(pred[:, j], truth[:, j], n_boot, seed)
        out[m] = row
    return out


def latency(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_s": None, "p95_s": None}
    return {"p50_s": round(float(np.percentile(seconds, 50)), 4), "p95_s": round(float(np.percentile(seconds, 95)), 4)}


def by_failure_kind(failures: list[list[dict] | None], pred: np.ndarray, truth: np.ndarray) -> dict:
    """Which failures a model reads and which it misses. For each metric, rows are grouped by
    that metric's failures: 'none' (no failure of the metric), one failure of kind K ('K'), or
    'several'; rows without failure records are left out. Per group: n, mean predicted score and
    mean truth, mean absolute error, and (single-kind groups, n >= 5) the Spearman correlation of
    the failure's severity with the predicted score, which should be strongly negative (a model
    that sees the failure but not how bad it is sits near 0); and per kind `srcc_if_right`, the
    metric's SRCC over all those rows were every row with a failure of that kind (alone or among
    several) scored at its truth: an optimistic bound of what reading that kind perfectly is worth,
    so the kinds that cost the metric most stand out."""
    out: dict[str, dict] = {}
    known = np.array([fs is not None for fs in failures], dtype=bool)
    for j, m in enumerate(METRICS):
        groups: dict[str, list[tuple[float, float, float]]] = {}
        has: dict[str, np.ndarray] = {}
        for i, (fs, p, t) in enumerate(zip(failures, pred[:, j], truth[:, j], strict=True)):
            if fs is None:
                continue
            mine = [f for f in fs if f.get("metric") == m]
            for f in mine:
                has.setdefault(f.get("kind", "?"), np.zeros(len(failures), dtype=bool))[i] = True
            key = "none" if not mine else mine[0].get("kind", "?") if len(mine) == 1 else "several"
            severity = float(mine[0].get("severity", np.nan)) if len(mine) == 1 else np.nan
            groups.setdefault(key, []).append((severity, float(p), float(t)))
        table = {}
        for key in sorted(groups, key=lambda k: (k in ("none", "several"), k)):
            a = np.array(groups[key])
            row = {"n": len(a), "mean_pred": round(float(a[:, 1].mean()), 3), "mean_truth": round(float(a[:, 2].mean()), 3),
                   "mae": round(float(np.abs(a[:, 1] - a[:, 2]).mean()), 3)}
            if key not in ("none", "several") and len(a) >= 5 and np.ptp(a[:, 0]) > 0 and np.ptp(a[:, 1]) > 0:
                row["srcc_severity"] = round(srcc(a[:, 0], a[:, 1]), 3)
            if key in has and np.ptp(truth[known, j]) > 0:
                right = np.where(has[key], truth[:, j], pred[:, j])
                row["srcc_if_right"] = round(srcc(right[known], truth[known, j]), 3)
            table[key] = row
        out[m] = table
    return out


def dense_map_fit(pred: np.ndarray, maps: np.ndarray, truth: np.ndarray) -> dict:
    """How well a model's dense damage maps read each metric, against what a perfect map would.

    pred [N, M, h, w]: predicted damage (probabilities); maps [N, M, h, w]: the target maps (each
    failure's severity on the structure it damaged, 0 elsewhere; finetune.data.damage_maps);
    truth [N, M]: MOS. Per metric: `pred_max_srcc`, Spearman of the predicted map's maximum with
    the MOS, sign turned so that higher is better (the worst place, as the heads read it);
    `true_max_srcc`, the same for the target map (its ceiling: how much of the score a perfect map
    would carry); `damaged_srcc`, over rows with damage, the predicted mean on the damaged cells
    against the target's severity there (does the map know how bad, not only where); and
    `clean_max`, the mean predicted maximum on rows with no damage (false alarms). A coefficient
    that cannot be computed (no damaged rows, a constant input) is None."""
    def rho(a: np.ndarray, b: np.ndarray) -> float | None:
        return round(srcc(a, b), 3) if len(a) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0 else None

    pred, maps = np.asarray(pred, np.float32), np.asarray(maps, np.float32)
    out = {}
    for j, m in enumerate(METRICS):
        p, t, y = pred[:, j].reshape(len(pred), -1), maps[:, j].reshape(len(maps), -1), np.asarray(truth)[:, j]
        damaged = t > 0
        hit = damaged.any(axis=1)
        inside = np.array([p[i][damaged[i]].mean() for i in np.flatnonzero(hit)])
        out[m] = {"pred_max_srcc": rho(-p.max(axis=1), y), "true_max_srcc": rho(-t.max(axis=1), y),
                  "damaged_srcc": rho(inside, t[hit].max(axis=1)),
                  "clean_max": round(float(p[~hit].max(axis=1).mean()), 3) if (~hit).any() else None}
    return out


def explanation_kinds(failures: list[list[dict] | None], explanations: list[dict[str, str]],
                      levels: list[dict[str, str]] | None = None,
                      facts: list[dict[str, list[str]] | None] | None = None) -> dict:
    """Per metric, whether the explanations name the failures the rows have (the phantom's kinds,
    read back by casiqa.phantom.facts.named_kinds): on rows with failures of the metric, the share
    whose worst failure (highest severity) is named, the share of all their failures named
    (recall) and the share of the kinds named that the row has (precision); on rows without, the
    share that names none. Rows without failure records are left out of those. Given each row's
    `levels`, also over every row the metric is scored fair or worse on: the share whose
    explanation names no failure at all, which reads as calling the structure intact under a score
    that says it is not (`n_low`, `low_silent`). Given each row's true `facts` (the phantom's, which
    say where: "mid LCx", "upper-left field"), also whether the explanations say where, and rightly:
    the share of rows whose explanation names a place (casiqa.phantom.facts.named_locations;
    `location_stated`) and, of those, the share naming a place the row's facts of the metric do not
    (`location_wrong`: a vessel or field the model made up)."""
    from casiqa.phantom.facts import named_kinds, named_locations

    out = {}
    for m in METRICS:
        low = low_silent = 0
        for i, expl in enumerate(explanations if levels is not None else []):
            if m in levels[i] and says_damaged(levels[i][m]):
                low += 1
                low_silent += not named_kinds(expl.get(m, ""), m)
        worst = recall = named_right = named_all = 0
        failed = clean = clean_right = 0
        for fails, expl in zip(failures, explanations, strict=True):
            if fails is None:
                continue
            own = [f for f in fails if f["metric"] == m]
            named = named_kinds(expl.get(m, ""), m)
            if not own:
                clean += 1
                clean_right += not named
                continue
            true = {f["kind"] for f in own}
            failed += 1
            worst += max(own, key=lambda f: f["severity"])["kind"] in named
            recall += len(true & named) / len(true)
            named_right += len(true & named)
            named_all += len(named)
        out[m] = {"n_failed": failed, "worst_named": round(worst / failed, 4) if failed else None,
                  "kind_recall": round(recall / failed, 4) if failed else None,
                  "kind_precision": round(named_right / named_all, 4) if named_all else None,
                  "n_clean": clean, "clean_right": round(clean_right / clean, 4) if clean else None}
        if levels is not None:
            out[m].update(n_low=low, low_silent=round(low_silent / low, 4) if low else None)
        if facts is not None:
            rows = stated = wrong = 0
            for true, expl in zip(facts, explanations, strict=True):
                if true is None or m not in expl:
                    continue
                rows += 1
                said = named_locations(expl[m])
                stated += bool(said)
                wrong += bool(said - named_locations(" ".join(true.get(m) or [])))
            out[m].update(location_stated=round(stated / rows, 4) if rows else None,
                          location_wrong=round(wrong / stated, 4) if stated else None)
    return out


WHOLE_FRAME = (0.0, 0.0, 1.0, 1.0)


def hit_summary(rows: list[tuple[float, float, float]]) -> dict:
    """Evidence boxes against damage, one (touches, touches by chance, share inside) per case ->
    their count and means (None for no case), as `evidence_hits` and evals.sanity report them."""
    means = np.asarray(rows, dtype=float).mean(axis=0) if rows else [None] * 3
    return {"n": len(rows), **{k: None if v is None else round(float(v), 4)
                               for k, v in zip(("touch", "touch_chance", "inside"), means, strict=True)}}


def evidence_hits(failures: list[list[dict] | None], evidence: list[dict[str, list[dict]]], seed: int = 0) -> dict:
    """Per metric, whether the evidence boxes find the failures: over rows with a failure of the
    metric that has a place (a box smaller than the frame) and at least one evidence box, the share
    whose strongest box (largest weight) touches the worst failure's box (`touch`), the same for
    that box moved to a random place in the frame (`touch_chance`: what a box of its size finds
    by luck; large boxes touch most things), and the mean share of the strongest box's area that
    lies inside the failure's box (`inside`); `by_kind`, the same per kind of the worst failure.
    `evidence`: per row, metric -> the output's evidence list ({"box": [x0, y0, x1, y1], "weight": w})."""
    rng = np.random.default_rng(seed)

    def overlap(a, b) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    out = {}
    for m in METRICS:
        rows, kinds = [], {}
        for fails, ev in zip(failures, evidence, strict=True):
            own = [f for f in fails or [] if f["metric"] == m and tuple(f["bbox"]) != WHOLE_FRAME]
            boxes = ev.get(m) or []
            if not own or not boxes:
                continue
            worst = max(own, key=lambda f: f["severity"])
            top = max(boxes, key=lambda e: e["weight"])["box"]
            w, h = top[2] - top[0], top[3] - top[1]
            x, y = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
            row = (overlap(top, worst["bbox"]) > 0, overlap((x, y, x + w, y + h), worst["bbox"]) > 0,
                   overlap(top, worst["bbox"]) / max(w * h, 1e-9))
            rows.append(row)
            kinds.setdefault(worst["kind"], []).append(row)
        out[m] = {**hit_summary(rows), "by_kind": {k: hit_summary(v) for k, v in sorted(kinds.items())}}
    return out


def auc(positive: list[float], negative: list[float]) -> float | None:
    """The chance that a positive value exceeds a negative one (ties half): the area under the ROC
    curve of telling them apart by the value; None when either side is empty."""
    if not positive or not negative:
        return None
    ranks = rankdata(np.concatenate([positive, negative]))
    n1, n0 = len(positive), len(negative)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def damage_separation(failures: list[list[dict] | None], evidence: list[dict[str, list[dict]]]) -> dict:
    """Per metric, whether the evidence boxes' damage (the damage map's peak inside a box) tells the
    rows with a failure of the metric from the rows without: each row's highest box damage, the
    AUC between the two groups, their medians and counts; `by_kind`, the AUC of the rows whose
    worst failure is of each kind against the clean rows. Rows without failure records, or whose
    boxes carry no damage (a routing map), are left out; a metric with none is absent."""
    out = {}
    for m in METRICS:
        clean, damaged, kinds = [], [], {}
        for fails, ev in zip(failures, evidence, strict=True):
            peaks = [e["damage"] for e in ev.get(m) or [] if e.get("damage") is not None]
            if fails is None or not peaks:
                continue
            own = [f for f in fails if f["metric"] == m]
            if own:
                damaged.append(max(peaks))
                kinds.setdefault(max(own, key=lambda f: f["severity"])["kind"], []).append(max(peaks))
            else:
                clean.append(max(peaks))
        if not clean and not damaged:
            continue

        def median(v: list[float]) -> float | None:
            return round(float(np.median(v)), 4) if v else None

        def rounded(a: float | None) -> float | None:
            return None if a is None else round(a, 4)

        out[m] = {"auc": rounded(auc(damaged, clean)), "n_damaged": len(damaged), "n_clean": len(clean),
                  "median_damaged": median(damaged), "median_clean": median(clean),
                  "by_kind": {k: {"n": len(v), "auc": rounded(auc(v, clean)), "median": median(v)}
                              for k, v in sorted(kinds.items())}}
    return out
