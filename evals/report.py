"""report.md for an eval run: the side-by-side table, validity and latency, and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from casiqa.metrics import LEVELS, METRIC_TITLES, METRICS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def table(systems: dict) -> str:
    """Markdown: one row per system, SRCC / PLCC per metric."""
    head = "| system | " + " | ".join(f"{METRIC_TITLES[m]} SRCC / PLCC" for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for name, per_metric in systems.items():
        cells = [f"{per_metric[m]['srcc']:.3f} / {per_metric[m]['plcc']:.3f}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scatter(path: Path, pred: np.ndarray, truth: np.ndarray, stats: dict) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.4))
    for j, m in enumerate(METRICS):
        ax = axes[j]
        ax.scatter(truth[:, j], pred[:, j], s=8, alpha=0.5)
        ax.plot([1, 5], [1, 5], "k--", lw=0.8)
        ax.set_xlim(0.9, 5.1)
        ax.set_ylim(0.9, 5.1)
        ax.set_xlabel("ground-truth MOS")
        ax.set_ylabel("predicted score")
        ax.set_title(f"{METRIC_TITLES[m]}: SRCC {stats[m]['srcc']:.3f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def confusions(path: Path, matrices: dict) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.4))
    for j, m in enumerate(METRICS):
        c = np.array(matrices[m])
        ax = axes[j]
        ax.imshow(c, cmap="Blues")
        for (r, k), v in np.ndenumerate(c):
            ax.text(k, r, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(5), LEVELS, rotation=45, fontsize=8)
        ax.set_yticks(range(5), LEVELS, fontsize=8)
        ax.set_xlabel("predicted level")
        ax.set_ylabel("true level")
        ax.set_title(METRIC_TITLES[m], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def kind_table(kinds: dict) -> list[str]:
    """Markdown lines: CAS-IQA per failure kind (evals.scoring.by_failure_kind)."""
    lines = ["## CAS-IQA by failure kind", "",
             "Rows grouped by each metric's failures: none, one failure of a kind, or several. "
             "Spearman(severity, score) should be strongly negative; near 0 means the model sees the "
             "failure but not how bad it is. SRCC if read right: the metric's SRCC were every image with a "
             "failure of this kind (alone or among others) scored at its truth, an optimistic bound of what "
             "reading the kind is worth.", "",
             "| metric | failure | n | Spearman(severity, score) | SRCC if read right | mean score | mean truth | MAE |",
             "|---|---|---|---|---|---|---|---|"]
    for m in METRICS:
        for kind, r in kinds.get(m, {}).items():
            s = f"{r['srcc_severity']:.2f}" if "srcc_severity" in r else ""
            right = f"{r['srcc_if_right']:.3f}" if "srcc_if_right" in r else ""
            lines.append(f"| {m} | {kind} | {r['n']} | {s} | {right} | {r['mean_pred']:.2f} | {r['mean_truth']:.2f} "
                         f"| {r['mae']:.2f} |")
    return lines + [""]


def pct(v: float | None) -> str:
    """A share as a whole percentage, blank when there is none."""
    return "" if v is None else f"{v:.0%}"


def explanation_table(named: dict) -> list[str]:
    """Markdown lines: whether CAS-IQA's explanations name the rows' failures
    (evals.scoring.explanation_kinds)."""
    lines = ["## Do the explanations name the failures?", "",
             "Each explanation read back into the phantom's failure kinds (casiqa.phantom.facts.named_kinds). "
             "On rows with failures of the metric: the worst one named, the share of their failures named "
             "(recall), the share of the kinds named that the row has (precision); on rows without: the share "
             "that names none; on every row scored fair or worse: the share whose explanation names no failure, "
             "which reads as calling the structure intact under a score that says it is not. Where the rows' "
             "facts say where: the share of explanations naming a place (a vessel or a field of the frame; "
             "casiqa.phantom.facts.named_locations) and, of those, the share naming one the row's facts do not.", "",
             "| metric | rows with failures | worst named | recall | precision | rows without | naming none "
             "| fair or worse | naming none | naming a place | a wrong place |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in METRICS:
        r = named.get(m)
        if r:
            lines.append(f"| {m} | {r['n_failed']} | {pct(r['worst_named'])} | {pct(r['kind_recall'])} | "
                         f"{pct(r['kind_precision'])} | {r['n_clean']} | {pct(r['clean_right'])} | "
                         f"{r.get('n_low', '')} | {pct(r.get('low_silent'))} | {pct(r.get('location_stated'))} | "
                         f"{pct(r.get('location_wrong'))} |")
    return lines + [""]


def evidence_table(hits: dict) -> list[str]:
    """Markdown lines: whether CAS-IQA's evidence boxes find the failures (evals.scoring.evidence_hits)."""
    lines = ["## Do the evidence boxes find the failures?", "",
             "Rows with a failure of the metric that has a place (its box smaller than the frame): the share whose "
             "strongest evidence box touches the worst failure's box, the share the same box would touch placed "
             "at random in the frame (chance, for a box that size), and the mean share of the box inside the "
             "failure's box.", "",
             "| metric | rows | touches the failure | by chance | inside the failure |", "|---|---|---|---|---|"]
    for m in METRICS:
        r = hits.get(m)
        if r:
            lines.append(f"| {m} | {r['n']} | {pct(r['touch'])} | {pct(r['touch_chance'])} | {pct(r['inside'])} |")
    kinds = [(m, k, r) for m in METRICS for k, r in (hits.get(m) or {}).get("by_kind", {}).items()]
    if kinds:
        lines += ["", "By the worst failure's kind:", "",
                  "| metric | kind | rows | touches the failure | by chance | inside the failure |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {m} | {k} | {r['n']} | {pct(r['touch'])} | {pct(r['touch_chance'])} | {pct(r['inside'])} |"
                  for m, k, r in kinds]
    return lines + [""]


def damage_table(separation: dict) -> list[str]:
    """Markdown lines: whether the evidence boxes' damage tells damaged rows from clean ones
    (evals.scoring.damage_separation)."""
    lines = ["## Does the evidence boxes' damage tell a failure from none?", "",
             "Each row's highest box damage (the damage map's peak inside a box): its medians on rows with and "
             "without a failure of the metric, and the AUC of telling them apart by it (0.5: no better than a "
             "coin).", "",
             "| metric | rows with a failure | median | rows without | median | AUC |", "|---|---|---|---|---|---|"]
    for m in METRICS:
        r = separation.get(m)
        if r:
            lines.append(f"| {m} | {r['n_damaged']} | {num(r['median_damaged'])} | {r['n_clean']} | "
                         f"{num(r['median_clean'])} | {num(r['auc'])} |")
    kinds = [(m, k, r) for m in METRICS for k, r in (separation.get(m) or {}).get("by_kind", {}).items()]
    if kinds:
        lines += ["", "By the worst failure's kind, against the rows without a failure of the metric:", "",
                  "| metric | kind | rows | median damage | AUC |", "|---|---|---|---|---|"]
        lines += [f"| {m} | {k} | {r['n']} | {num(r['median'])} | {num(r['auc'])} |" for m, k, r in kinds]
    return lines + [""]


def num(v: float | None) -> str:
    """A figure for a table: two decimals, or a dash for none."""
    return "-" if v is None else f"{v:.2f}"


def write_report(out: Path, metrics: dict, systems: dict) -> None:
    lines = [f"# Eval: {metrics['model']} on {metrics['data']} [{metrics['split']}]", "",
             f"{metrics['n_rows']} rows; schema-valid outputs {metrics['schema_valid_rate']:.1%}; "
             f"latency per image p50 {metrics['latency']['p50_s']} s, p95 {metrics['latency']['p95_s']} s; "
             f"wall time {metrics['wall_time_s']} s.", "", table(metrics["systems"]), ""]
    main = metrics["systems"].get("CAS-IQA")
    if main:
        lines += ["CAS-IQA with bootstrap 95 % intervals:", "", "| metric | SRCC | KRCC | PLCC | RMSE | level acc. |",
                  "|---|---|---|---|---|---|"]
        for m in METRICS:
            s = main[m]
            ci = s.get("ci95", {})
            lines.append(f"| {m} | {s['srcc']:.3f} {ci.get('srcc', '')} | {s['krcc']:.3f} {ci.get('krcc', '')} | "
                         f"{s['plcc']:.3f} {ci.get('plcc', '')} | {s['rmse']:.3f} | {s['level_accuracy']:.3f} |")
        lines.append("")
    if metrics["invalid"]:
        lines += ["Invalid outputs (first 20):", ""] + [f"- {x['id']}: {x['error']}" for x in metrics["invalid"]] + [""]
    lines += ["PLCC and RMSE after the 4-parameter logistic fit (VQEG); SRCC/KRCC/PLCC by scipy.", ""]
    if metrics.get("by_failure_kind"):
        lines += kind_table(metrics["by_failure_kind"])
    if metrics.get("explanation_kinds"):
        lines += explanation_table(metrics["explanation_kinds"])
    if metrics.get("evidence_boxes"):
        lines += evidence_table(metrics["evidence_boxes"])
    if metrics.get("evidence_damage"):
        lines += damage_table(metrics["evidence_damage"])
    lines += ["## Plots", ""]
    if "CAS-IQA" in systems:
        pred, truth = systems["CAS-IQA"]
        scatter(out / "scatter.png", pred, truth, main)
        confusions(out / "confusion.png", metrics["confusion"])
        lines += ["![predicted vs ground truth](scatter.png)", "", "![level confusion](confusion.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
