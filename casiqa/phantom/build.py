"""Build a phantom data set in parallel: cases -> PNG bytes -> Hugging Face DatasetDict or folder.

Anatomies (live frames) are split train/validation/test, so no anatomy appears in two splits.
`extra_train` adds training cases from further anatomies after the first `n` cases, whose split it
leaves as it was: more training data, measured against the same validation and test cases.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from casiqa.data.folder import SPLITS, FolderWriter
from casiqa.phantom.case import anatomy_cases
from casiqa.phantom.config import PhantomConfig

IMAGE_KEYS = ("synthetic", "live", "reference", "vessel_mask", "device_mask", "extra_wire_mask")
SHARED_KEYS = ("live", "reference", "vessel_mask", "device_mask")  # one file per anatomy


@dataclass
class BuildConfig:
    out: str = field(default="data/phantom", metadata={"help": "output directory"})
    n: int = field(default=3565, metadata={"help": "number of cases (synthetic angiograms); CAS-3K has 3,565"})
    seed: int = field(default=0, metadata={"help": "master seed: same seed, same bytes"})
    format: Literal["hf", "folder"] = field(default="hf", metadata={"help": "datasets.save_to_disk or PNG folder"})
    workers: int = field(default=0, metadata={"help": "processes; 0 = all cores"})
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    extra_train: int = field(default=0, metadata={
        "help": "more training cases after the n, from further anatomies; the n cases keep their split"})

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.extra_train < 0:
            raise ValueError(f"extra_train must be >= 0, got {self.extra_train}")
        if not 0 <= self.validation_fraction + self.test_fraction < 1:
            raise ValueError("validation_fraction + test_fraction must be in [0, 1)")


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def split_of_anatomies(n_anatomies: int, seed: int, validation: float, test: float) -> list[str]:
    """A split per anatomy: a seeded shuffle, then test, validation, and the rest train."""
    order = np.random.default_rng([seed, 2**20]).permutation(n_anatomies)
    n_test = round(test * n_anatomies) if test > 0 else 0
    n_val = round(validation * n_anatomies) if validation > 0 else 0
    if n_anatomies >= 3:  # every requested split gets at least one anatomy
        n_test, n_val = max(n_test, test > 0), max(n_val, validation > 0)
    split = ["train"] * n_anatomies
    for rank, a in enumerate(order):
        split[a] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return split


def _encode_anatomy(job: tuple[int, int, PhantomConfig, int]) -> list[tuple[dict, dict[str, tuple[str, bytes]]]]:
    seed, anatomy, cfg, keep = job
    out = []
    cases = anatomy_cases(seed, anatomy, cfg)[:keep]
    shared = {k: (f"s{seed}-a{anatomy:05d}_{k}.png", png_bytes(cases[0].images[k])) for k in SHARED_KEYS}
    for case in cases:
        images = dict(shared)
        for k in ("synthetic", "extra_wire_mask"):  # per case
            images[k] = (f"{case.id}_{k}.png", png_bytes(case.images[k]))
        out.append((case.annotation(), images))
    return out


def generate(cfg: PhantomConfig, build: BuildConfig, progress: bool = True) -> Iterator[tuple[dict, dict]]:
    """(annotation row with its split, images) for every case, in a fixed order."""
    k = cfg.variants_per_anatomy
    n_anat = math.ceil(build.n / k)
    splits = split_of_anatomies(n_anat, build.seed, build.validation_fraction, build.test_fraction)
    jobs = [(build.seed, a, cfg, min(k, build.n - a * k)) for a in range(n_anat)]
    # extra training cases: whole anatomies numbered on from the first n's (the last may be cut short)
    n_extra = math.ceil(build.extra_train / k)
    splits += ["train"] * n_extra
    jobs += [(build.seed, n_anat + a, cfg, min(k, build.extra_train - a * k)) for a in range(n_extra)]
    workers = build.workers or mp.cpu_count()
    bar = tqdm(total=build.n + build.extra_train, desc="phantom cases", unit="case", disable=not progress, smoothing=0.05)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) if workers > 1 else _Serial() as pool:
        for (_, anatomy, _, _), cases in zip(jobs, pool.imap(_encode_anatomy, jobs, chunksize=2), strict=True):
            for row, images in cases:
                row["split"] = splits[anatomy]
                yield row, images
                bar.update(1)
    bar.close()


class _Serial:
    """Pool stand-in for workers=1 (easier to debug and profile)."""

    def imap(self, fn, jobs, chunksize=1):
        return map(fn, jobs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _features():
    from datasets import Features, Sequence, Value
    from datasets import Image as HFImage

    from casiqa.metrics import METRICS
    opinion = {"mos": Value("float32"), "std": Value("float32"), "level": Value("string"),
               "quality": Value("float32"), "ratings": Sequence(Value("int8"))}
    return Features({
        "id": Value("string"), "anatomy": Value("int32"), "variant": Value("int32"),
        **{k: HFImage() for k in IMAGE_KEYS},
        "scores": {m: opinion for m in METRICS},
        "facts": {m: Sequence(Value("string")) for m in METRICS},
        "failures": Value("string"),  # JSON list: kinds carry different parameters
        "meta": Value("string"),      # JSON object
    })


def write_hf(rows: Iterator[tuple[dict, dict]], out: Path) -> dict[str, int]:
    from datasets import Dataset, DatasetDict

    columns: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for row, images in rows:
        record = {k: v for k, v in row.items() if k != "split"}
        record["failures"] = json.dumps(row["failures"], sort_keys=True)
        record["meta"] = json.dumps(row["meta"], sort_keys=True)
        for key, (name, data) in images.items():
            record[key] = {"bytes": data, "path": name}
        columns[row["split"]].append(record)
    features = _features()
    dd = DatasetDict({s: Dataset.from_list(v, features=features) for s, v in columns.items() if v})
    dd.save_to_disk(str(out))
    return {s: len(v) for s, v in columns.items()}


def write_folder(rows: Iterator[tuple[dict, dict]], out: Path) -> dict[str, int]:
    counts = dict.fromkeys(SPLITS, 0)
    with FolderWriter(out) as writer:
        for row, images in rows:
            writer.add(row, images)
            counts[row["split"]] += 1
    return counts


def build(cfg: PhantomConfig, build_cfg: BuildConfig, progress: bool = True) -> dict[str, int]:
    """Generate and write a data set; returns the number of cases per split."""
    out = Path(build_cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = generate(cfg, build_cfg, progress)
    counts = write_hf(rows, out) if build_cfg.format == "hf" else write_folder(rows, out)
    (out / "phantom_config.json").write_text(json.dumps({"phantom": vars(cfg), "build": vars(build_cfg)}, indent=2))
    return counts
