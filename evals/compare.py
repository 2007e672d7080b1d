"""Print a table of several eval runs side by side; with --paired, how far each run ranks the
same images better or worse than the first, with a paired bootstrap interval.

    python -m evals.compare results/eval-full results/eval-must-off results/eval-aux-off
    python -m evals.compare --paired runs/eval-a runs/eval-b
    python -m evals.compare --paired runs/a-val+runs/a-test runs/b-val+runs/b-test   # splits pooled

Two models scored on the same few hundred images differ by much less than either one's SRCC
interval says: the images that are hard for one are mostly hard for the other. The paired
interval resamples the images once for both runs, so it measures the difference itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from casiqa.metrics import METRICS
from casiqa.stats import srcc
from evals.report import table


def read_rows(spec: str) -> dict[str, dict]:
    """The scored rows of one run, or of several joined by '+' (the splits of one build): id ->
    predicted and true score per metric, for rows whose output carried every metric. Read only:
    a line cut off by a run still going is skipped."""
    rows: dict[str, dict] = {}
    for part in spec.split("+"):
        path = Path(part) / "results.jsonl"
        if not path.is_file():
            raise SystemExit(f"error: {path}: no such file (not an eval run directory)")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue  # the last line of a run still being written
            pred, truth = (row or {}).get("pred") or {}, (row or {}).get("truth") or {}
            if all(pred.get(m) is not None and truth.get(m) is not None for m in METRICS):
                if row["id"] in rows:
                    raise SystemExit(f"error: {path}:{n}: row {row['id']} appears twice in {spec}")
                rows[row["id"]] = {"pred": [pred[m] for m in METRICS], "truth": [truth[m] for m in METRICS]}
    return rows


def paired_difference(pred_a: np.ndarray, pred_b: np.ndarray, truth: np.ndarray, n_boot: int = 1000,
                      seed: int = 0) -> dict:
    """SRCC of b minus SRCC of a against the same truth [N], with the 2.5th and 97.5th percentile of
    that difference over `n_boot` resamples of the rows, each resample shared by a and b."""
    a, b = srcc(pred_a, truth), srcc(pred_b, truth)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(truth), len(truth))
        if np.ptp(truth[i]) == 0 or np.ptp(pred_a[i]) == 0 or np.ptp(pred_b[i]) == 0:
            continue  # a resample with no ranking to measure (as evals.scoring.bootstrap_ci skips it)
        boots.append(srcc(pred_b[i], truth[i]) - srcc(pred_a[i], truth[i]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"a": round(a, 4), "b": round(b, 4), "diff": round(b - a, 4), "lo": round(float(lo), 4), "hi": round(float(hi), 4)}


def paired_table(specs: list[str], n_boot: int = 1000) -> str:
    """Markdown: each run after the first against the first, on the rows all of them scored."""
    runs = [read_rows(s) for s in specs]
    ids = sorted(set.intersection(*(set(r) for r in runs)))
    if len(ids) < 10:
        raise SystemExit(f"error: the runs share {len(ids)} scored rows; a paired comparison needs the same images")
    truth = np.array([runs[0][i]["truth"] for i in ids])
    for spec, rows in zip(specs[1:], runs[1:], strict=True):
        if not np.allclose([rows[i]["truth"] for i in ids], truth, atol=1e-3):
            raise SystemExit(f"error: {spec} holds other true scores for the same ids: not the same images")
    preds = [np.array([r[i]["pred"] for i in ids]) for r in runs]
    lines = [f"{len(ids)} rows scored by every run; SRCC difference against {specs[0]}, paired bootstrap 95 % "
             f"interval ({n_boot} resamples of the rows)", "",
             "| run | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    lines.append(f"| {specs[0]} | " + " | ".join(f"{srcc(preds[0][:, j], truth[:, j]):.3f}"
                                                  for j in range(len(METRICS))) + " |")
    for spec, pred in zip(specs[1:], preds[1:], strict=True):
        cells = []
        for j in range(len(METRICS)):
            d = paired_difference(preds[0][:, j], pred[:, j], truth[:, j], n_boot=n_boot)
            cells.append(f"{d['b']:.3f} ({d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}])")
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    paired = "--paired" in args
    args = [a for a in args if a != "--paired"]
    if not args or (paired and len(args) < 2):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if paired:
        print(paired_table(args))
        return 0
    systems = {}
    for d in map(Path, args):
        path = d / "metrics.json"
        if not path.is_file():
            print(f"error: {path}: no such file (not an eval run directory)", file=sys.stderr)
            return 2
        metrics = json.loads(path.read_text())
        for name, per_metric in metrics["systems"].items():
            systems[f"{d.name}: {name}"] = per_metric
    print(table(systems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
