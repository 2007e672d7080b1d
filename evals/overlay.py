"""Evidence overlays: where the model looked for each metric, beside where the failures are.

    python -m evals.overlay --data data/phantom --split test --n 4 --out docs/evidence.png [--model DIR]

One row per case, one column per metric: the synthetic angiogram under the map the assessor's
evidence boxes for that metric come from (the model's damage map: how damaged each place looks;
in a model without one, its routing map: how much each visual token was routed to the metric's
branch), those boxes (solid, with their weight: the share of the map's excess mass, and from a damage map
their damage: the map's peak inside them, how damaged the place looks) and the
phantom's failure boxes of that metric (dashed), titled with the model's score and the panel's MOS.
Cases are picked so that every metric has a failure in some row and the rows differ (the first
case of the split with a failure of each kind order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from casiqa.metrics import METRIC_TITLES, METRICS


def pick_cases(rows, n: int) -> list[int]:
    """Indices of n rows whose failures cover each metric in turn (rows with one strong failure
    of the metric first), deterministic."""
    chosen: list[int] = []
    failures = [json.loads(f) if isinstance(f, str) else list(f or []) for f in rows["failures"]]
    for k in range(n):
        metric = METRICS[k % len(METRICS)]
        best = [i for i, fl in enumerate(failures) if i not in chosen
                and any(f["metric"] == metric and f["severity"] > 0.6 for f in fl)]
        if best:
            chosen.append(best[0])
    return chosen


def box_label(box: dict) -> str:
    """An evidence box's label on the overlay: its weight, and its damage where it has one."""
    return f"{box['weight']:.2f}" if box.get("damage") is None else f"{box['weight']:.2f} / {box['damage']:.2f}"


def draw(rows, indices: list[int], heads, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from casiqa.data.rows import grey_image
    from casiqa.evidence import upsample

    fig, axes = plt.subplots(len(indices), len(METRICS), figsize=(3.2 * len(METRICS), 3.3 * len(indices)), squeeze=False)
    for r, (i, head) in enumerate(zip(indices, heads, strict=True)):
        row = rows[i]
        image = grey_image(row["synthetic"])
        h, w = image.shape
        failures = json.loads(row["failures"]) if isinstance(row["failures"], str) else row["failures"]
        for j, m in enumerate(METRICS):
            ax = axes[r, j]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            where = head.evidence_map(j)
            if where is not None:
                ax.imshow(upsample(where, (h, w)), cmap="magma", alpha=0.35, vmin=0, vmax=1)
                for b in head.evidence(j):
                    x0, y0, x1, y1 = b["box"]
                    ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, ec="cyan", lw=1.5))
                    ax.text(x0 * w + 2, y0 * h + 2, box_label(b), color="cyan", fontsize=7, va="top",
                            bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
            for f in failures:
                if f["metric"] == m:
                    x0, y0, x1, y1 = f["bbox"]
                    ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, ec="yellow",
                                           lw=1.2, ls="--"))
            mos = float(row["scores"][m]["mos"])
            kinds = ", ".join(sorted({f["kind"] for f in failures if f["metric"] == m})) or "no failure"
            ax.set_title(f"{METRIC_TITLES[m]}\nscore {head.score[m]:.2f} (MOS {mos:.2f})\n{kinds}", fontsize=8)
            ax.axis("off")
    damage = any(hd.damage is not None for hd in heads)
    kind, label = ("damage map", "weight / damage") if damage else ("routing map", "weight")
    fig.suptitle(f"model {kind} (heat), model evidence boxes with their {label} (cyan), "
                 "phantom failure boxes (yellow, dashed)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from casiqa.paths import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data", default="data/phantom")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--out", default="docs/evidence.png")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be >= 1")

    from casiqa.assessor import Assessor
    from casiqa.data.rows import grey_image, load_rows
    from casiqa.inputs import AssessInput

    rows = load_rows(args.data, args.split)
    if "failures" not in rows[0] or rows[0].get("failures") is None:
        print(f"error: {args.data} [{args.split}] has no failure records to draw", file=sys.stderr)
        return 1
    indices = pick_cases(rows, args.n)
    assessor = Assessor.load(args.model)
    inputs = [AssessInput(grey_image(rows[i]["synthetic"]), grey_image(rows[i].get("live")),
                          grey_image(rows[i].get("reference")), name=str(rows[i].get("id", i))) for i in indices]
    draw(rows, indices, assessor.heads(inputs), Path(args.out))
    print(f"wrote {args.out} ({len(indices)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
