"""Rows of an assessment data set, from a phantom DatasetDict or an annotated folder (core, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from casiqa.imaging import load_angiogram, to_grey
from casiqa.metrics import METRICS

REQUIRED = ("synthetic", "scores")


class DatasetFieldError(ValueError):
    """A training set without a field the trainer needs."""


def load_rows(data: str | Path, split: str):
    """A split of a phantom DatasetDict (save_to_disk) or of an annotated folder."""
    data = Path(data)
    if (data / "annotations.jsonl").is_file():
        from casiqa.data.folder import read_folder

        rows = read_folder(data, split=split)
    elif (data / "dataset_dict.json").is_file():
        from datasets import load_from_disk

        dd = load_from_disk(str(data))
        if split not in dd:
            raise DatasetFieldError(f"{data}: no split {split!r} (has {', '.join(dd)})")
        rows = dd[split]
    else:
        raise FileNotFoundError(f"{data}: neither a datasets.DatasetDict (dataset_dict.json) nor an annotated folder "
                                "(annotations.jsonl)")
    if len(rows) == 0:
        raise DatasetFieldError(f"{data}: split {split!r} is empty")
    check_fields(rows[0], f"{data} [{split}]")
    return rows


def data_fingerprint(data: str | Path) -> str:
    """Which data a path holds now: the `datasets` fingerprint of each split of a DatasetDict, or a
    hash of an annotated folder's annotations.jsonl; '' for anything else. A data set rebuilt at
    the same path gets another one (the phantom's box or mask changes keep the path)."""
    import hashlib

    data = Path(data)
    if (data / "annotations.jsonl").is_file():
        return "folder:" + hashlib.sha256((data / "annotations.jsonl").read_bytes()).hexdigest()[:16]
    states = sorted(data.glob("*/state.json"))
    if (data / "dataset_dict.json").is_file() and states:
        return ";".join(f"{p.parent.name}:{json.loads(p.read_text()).get('_fingerprint', '?')}" for p in states)
    return ""


def check_fields(row: dict, where: str) -> None:
    missing = [k for k in REQUIRED if row.get(k) is None]
    if missing:
        raise DatasetFieldError(f"{where}: rows lack the field(s) {', '.join(missing)} that training needs")
    for m in METRICS:
        s = row["scores"].get(m) if isinstance(row["scores"], dict) else None
        if not s or s.get("mos") is None:
            raise DatasetFieldError(f"{where}: rows lack scores.{m}.mos")


def failure_list(row: dict) -> list[dict] | None:
    """A row's failures (phantom rows store them as JSON text), or None when it has none recorded.
    Each needs a known `metric` and a `bbox` [x0, y0, x1, y1] in [0, 1]; a malformed record is
    refused with the row's id (it would otherwise mark the wrong place as damaged)."""
    failures = row.get("failures")
    if failures is None:
        return None
    where = f"row {row.get('id', '?')}"
    try:
        out = json.loads(failures) if isinstance(failures, str) else list(failures)
    except (json.JSONDecodeError, TypeError) as e:
        raise DatasetFieldError(f"{where}: failures is not a JSON list ({e})") from None
    for i, f in enumerate(out):
        if not isinstance(f, dict) or f.get("metric") not in METRICS:
            raise DatasetFieldError(f"{where}: failure {i} needs a metric out of {', '.join(METRICS)}")
        box = f.get("bbox")
        if (not isinstance(box, list | tuple) or len(box) != 4 or not all(isinstance(v, int | float) for v in box)
                or not all(0.0 <= v <= 1.0 for v in box) or box[0] > box[2] or box[1] > box[3]):
            raise DatasetFieldError(f"{where}: failure {i} bbox must be [x0, y0, x1, y1] in [0, 1], got {box!r}")
    return out


def grey_image(value) -> np.ndarray | None:
    """A row's image (PIL from datasets, or a path from a folder) as grey [H, W] in [0, 1]."""
    if value is None:
        return None
    if isinstance(value, str | Path):
        return load_angiogram(value)
    return to_grey(value)
