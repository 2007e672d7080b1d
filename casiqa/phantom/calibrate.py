"""Compare phantom reference angiograms with real ones, statistic by statistic, and draw a gallery.

    python -m casiqa.phantom.calibrate --real ../shared/real/coronary40 --out results/calibration

Phantom references are resampled to the real frames' pixel grid (Lanczos; masks by area) and
quantised to 8 bit like them, then every statistic of casiqa.phantom.realism is measured the
same way on both sides. Prints a table (real quartiles, phantom median, verdict) and writes
calibration.json, gallery.png and scores.png to --out.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from casiqa.phantom.config import PhantomConfig
from casiqa.phantom.realism import STATISTICS, image_statistics

DEFAULT_REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real" / "coronary40"


@dataclass
class CalibrateConfig:
    real: str = field(default=str(DEFAULT_REAL), metadata={"help": "folder of N.png angiograms with N_gt.png masks"})
    out: str = field(default="results/calibration", metadata={"help": "where the table and pictures go"})
    n: int = field(default=60, metadata={"help": "phantom anatomies to measure"})
    seed: int = 1000


def load_real(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image in [0, 1], bool mask) for every N.png with an N_gt.png beside it."""
    if not folder.is_dir():
        raise FileNotFoundError(f"real angiogram folder {folder} not found")
    out = []
    for path in sorted(folder.glob("*.png"), key=lambda p: (len(p.stem), p.stem)):
        if path.stem.endswith("_gt"):
            continue
        gt = path.with_name(f"{path.stem}_gt.png")
        if not gt.is_file():
            continue
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        mask = np.asarray(Image.open(gt).convert("L")) > 127
        out.append((path.stem, image, mask))
    if not out:
        raise FileNotFoundError(f"no N.png + N_gt.png pairs in {folder}")
    return out


def to_grid(image: np.ndarray, mask: np.ndarray, shape: tuple[int, int], bit_depth: int) -> tuple[np.ndarray, np.ndarray]:
    """A phantom image and mask on another pixel grid, as 8-bit-quantised [0, 1] and bool."""
    top = float((1 << bit_depth) - 1)
    f = Image.fromarray((image.astype(np.float64) / top).astype(np.float32), mode="F")
    small = np.asarray(f.resize(shape[::-1], Image.LANCZOS), dtype=np.float64)
    small = np.round(np.clip(small, 0, 1) * 255) / 255
    m = Image.fromarray(mask.astype(np.float32), mode="F").resize(shape[::-1], Image.BOX)
    return small, np.asarray(m) >= 0.5


def compare(real_stats: list[dict], phantom_stats: list[dict]) -> list[dict]:
    """Per statistic: real quartiles, phantom median and quartiles, and whether the phantom
    median lies inside the real interquartile range."""
    rows = []
    for name in STATISTICS:
        r = np.array([s[name] for s in real_stats], dtype=float)
        p = np.array([s[name] for s in phantom_stats], dtype=float)
        rq = np.nanpercentile(r, [25, 50, 75])
        pq = np.nanpercentile(p, [25, 50, 75])
        rows.append({"statistic": name, "real_q25": rq[0], "real_median": rq[1], "real_q75": rq[2],
                     "phantom_q25": pq[0], "phantom_median": pq[1], "phantom_q75": pq[2],
                     "inside_iqr": bool(rq[0] <= pq[1] <= rq[2])})
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"| {'statistic':<16} | {'real q25':>8} | {'real med':>8} | {'real q75':>8} | {'phantom med':>11} | in IQR |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(f"| {r['statistic']:<16} | {r['real_q25']:>8.3f} | {r['real_median']:>8.3f} | {r['real_q75']:>8.3f} "
                     f"| {r['phantom_median']:>11.3f} | {'yes' if r['inside_iqr'] else 'NO':<6} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from casiqa.cli import parse_config
    from casiqa.phantom.case import anatomy_cases
    from casiqa.phantom.gallery import draw_gallery, draw_scores

    cal, cfg = parse_config((CalibrateConfig, PhantomConfig), argv, description=__doc__.splitlines()[0])
    try:
        real = load_real(Path(cal.real))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shape = real[0][1].shape
    real_stats = [image_statistics(img, mask) for _, img, mask in real]
    cases, phantom_stats = [], []
    for anatomy in range(cal.n):
        group = anatomy_cases(cal.seed, anatomy, cfg)
        cases.extend(group)
        image, mask = to_grid(group[0].images["reference"], group[0].images["vessel_mask"] > 0, shape, cfg.bit_depth)
        phantom_stats.append(image_statistics(image, mask))
    rows = compare(real_stats, phantom_stats)
    print(f"{len(real)} real angiograms ({cal.real}) vs {cal.n} phantom references at {shape[1]}x{shape[0]} px")
    print(format_table(rows))
    print(f"{sum(r['inside_iqr'] for r in rows)}/{len(rows)} phantom medians inside the real interquartile range")
    out = Path(cal.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps({"rows": rows, "units": STATISTICS}, indent=2))
    draw_gallery(cases[::cfg.variants_per_anatomy][:4], [img for _, img, _ in real[:4]], out / "gallery.png")
    draw_scores([c.annotation() for c in cases], out / "scores.png")
    print(f"wrote {out / 'calibration.json'}, {out / 'gallery.png'}, {out / 'scores.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
