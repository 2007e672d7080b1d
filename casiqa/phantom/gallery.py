"""Pictures of the phantom: a gallery beside real angiograms, and score distributions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from casiqa.metrics import METRIC_TITLES, METRICS

CLEAN_PREFIXES = ("no artefacts", "vessel tree complete", "guidewire sharp")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_gallery(cases: list, real_images: list[np.ndarray], path: Path) -> None:
    """One row per case: live | reference | synthetic (with its ground truth) | a real angiogram."""
    plt = _plt()
    rows = min(len(cases), len(real_images))
    fig, axes = plt.subplots(rows, 4, figsize=(13, 3.4 * rows), squeeze=False)
    for r in range(rows):
        case = cases[r]
        top = float((1 << case.meta["bit_depth"]) - 1)
        scores = " / ".join(f"{case.scores[m].mos:.1f}" for m in METRICS)
        panels = [
            (case.images["live"] / top, "phantom live (no contrast)"),
            (case.images["reference"] / top, "phantom reference"),
            (case.images["synthetic"] / top, f"phantom synthetic, MOS wire/branch/artefact {scores}"),
            (real_images[r], "real angiogram (coronary40)"),
        ]
        for c, (img, title) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        facts = [f for m in METRICS for f in case.facts[m] if not f.startswith(CLEAN_PREFIXES)]
        text = "\n".join(textwrap.wrap("; ".join(facts) or "clean", 60)[:3])
        axes[r][2].text(0.0, -0.02, text, transform=axes[r][2].transAxes, fontsize=7, va="top")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.04, wspace=0.03, hspace=0.3)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def draw_scores(annotations: list[dict], path: Path) -> None:
    """MOS histograms per metric and pairwise scatter (the metrics should vary independently)."""
    plt = _plt()
    mos = np.array([[a["scores"][m]["mos"] for m in METRICS] for a in annotations])
    fig, axes = plt.subplots(1, 6, figsize=(20, 3.3))
    for j, m in enumerate(METRICS):
        axes[j].hist(mos[:, j], bins=np.linspace(1, 5, 17), color="#4a7ab5")
        axes[j].set_title(f"{METRIC_TITLES[m]} (MOS)", fontsize=9)
    for k, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
        ax = axes[3 + k]
        ax.scatter(mos[:, a], mos[:, b], s=4, alpha=0.4)
        rho = np.corrcoef(mos[:, a], mos[:, b])[0, 1]
        ax.set_xlabel(METRIC_TITLES[METRICS[a]], fontsize=8)
        ax.set_ylabel(METRIC_TITLES[METRICS[b]], fontsize=8)
        ax.set_title(f"r = {rho:.2f}", fontsize=9)
    fig.suptitle(f"{len(mos)} phantom cases", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
