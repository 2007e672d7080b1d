"""The annotated folder format: PNG images plus one `annotations.jsonl`.

The phantom writes it (`python -m casiqa.phantom --format folder`) and users bring their own
CAS-3K-like data in it. One JSON object per line:

    {
      "id": "case-0001",                       required, unique
      "synthetic": "images/case-0001.png",     required: the image to assess
      "live": "images/frame-17_live.png",      optional auxiliary images (paths relative to
      "reference": "images/frame-17_ref.png",    the folder; several rows may share one)
      "scores": {                              required, every metric:
        "guidewire_visibility": {"mos": 3.4, "std": 0.6, "level": "fair"},
        "branch_discernibility": {"mos": 4.1},            std and level optional
        "artifact_interference": {"mos": 2.0, "std": 0.5}
      },
      "split": "train",                        optional: train | validation | test
      "facts": {"branch_discernibility": ["second diagonal missing"]},   optional
      "vessel_mask": "...", "device_mask": "...", "extra_wire_mask": "...",         optional
      "failures": [...], "meta": {...}                                              optional
    }

Each failure record: {"metric": ..., "kind": ..., "severity": 0..1, "bbox": [x0, y0, x1, y1] in
0..1}. The router learns where failures are from the boxes; a model with findings heads
(`--findings true`) learns which kinds are present from `kind`, which must be one of the phantom's
kinds for its metric (casiqa.model.findings.phantom_vocabulary). An empty list says the image is
clean; a row without the field teaches neither.

MOS is on the 1..5 scale, higher is better for every metric (artifact_interference 5 = no
artefacts). A level, when given, must be the level nearest the MOS.
"""

from __future__ import annotations

import json
from pathlib import Path

from casiqa.metrics import LEVELS, METRICS, SCORE_MAX, SCORE_MIN, level_of

ANNOTATIONS = "annotations.jsonl"
IMAGE_FIELDS = ("synthetic", "live", "reference", "vessel_mask", "device_mask", "extra_wire_mask")
SPLITS = ("train", "validation", "test")


class AnnotationError(ValueError):
    """A malformed annotation; the message names the file and line."""


def _check_scores(scores: object, where: str) -> None:
    if not isinstance(scores, dict):
        raise AnnotationError(f"{where}: 'scores' must be an object keyed by metric")
    unknown = sorted(set(scores) - set(METRICS))
    if unknown:
        raise AnnotationError(f"{where}: unknown metric(s) {', '.join(unknown)}; expected {', '.join(METRICS)}")
    for m in METRICS:
        s = scores.get(m)
        if not isinstance(s, dict) or "mos" not in s:
            raise AnnotationError(f"{where}: scores.{m}.mos is missing")
        mos = s["mos"]
        if isinstance(mos, bool) or not isinstance(mos, int | float) or not SCORE_MIN <= mos <= SCORE_MAX:
            raise AnnotationError(f"{where}: scores.{m}.mos must be a number in [{SCORE_MIN:g}, {SCORE_MAX:g}], got {mos!r}")
        std = s.get("std", 0.0)
        if isinstance(std, bool) or not isinstance(std, int | float) or std < 0:
            raise AnnotationError(f"{where}: scores.{m}.std must be a number >= 0, got {std!r}")
        level = s.get("level")
        if level is not None and level not in LEVELS:
            raise AnnotationError(f"{where}: scores.{m}.level {level!r} is not one of {', '.join(LEVELS)}")
        if level is not None and level != level_of(mos):
            raise AnnotationError(f"{where}: scores.{m}.level {level!r} contradicts mos {mos} ({level_of(mos)})")


def validate_row(row: object, root: Path, where: str, check_files: bool = True) -> dict:
    """Check one annotation row; returns it with image paths made absolute."""
    if not isinstance(row, dict):
        raise AnnotationError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if not isinstance(row.get("id"), str) or not row["id"]:
        raise AnnotationError(f"{where}: 'id' (a non-empty string) is missing")
    if not isinstance(row.get("synthetic"), str):
        raise AnnotationError(f"{where}: 'synthetic' (the image path) is missing")
    _check_scores(row.get("scores"), where)
    if "split" in row and row["split"] not in SPLITS:
        raise AnnotationError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
    out = dict(row)
    for key in IMAGE_FIELDS:
        if row.get(key) is None:
            continue
        if not isinstance(row[key], str):
            raise AnnotationError(f"{where}: '{key}' must be a path string")
        path = (root / row[key]).resolve()
        if check_files and not path.is_file():
            raise AnnotationError(f"{where}: {key} image {row[key]!r} not found under {root}")
        out[key] = str(path)
    return out


def read_folder(root: str | Path, split: str | None = None, check_files: bool = True) -> list[dict]:
    """All rows of a folder (or one split of it), validated; errors name file and line."""
    root = Path(root)
    path = root / ANNOTATIONS
    if not path.is_file():
        raise AnnotationError(f"{path}: no such file (an annotated folder holds {ANNOTATIONS} and its images)")
    rows, seen = [], {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise AnnotationError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            row = validate_row(raw, root, where, check_files)
            if row["id"] in seen:
                raise AnnotationError(f"{where}: duplicate id {row['id']!r} (first on line {seen[row['id']]})")
            seen[row["id"]] = n
            if split is None or row.get("split") == split:
                rows.append(row)
    return rows


class FolderWriter:
    """Writes images and annotation rows into a folder, one case at a time."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        self._fh = (self.root / ANNOTATIONS).open("w", encoding="utf-8")
        self._written: set[str] = set()

    def add(self, row: dict, images: dict[str, tuple[str, bytes]]) -> None:
        """`images`: field -> (file name, PNG bytes); a file name already written is reused."""
        row = dict(row)
        for key, (name, data) in images.items():
            if name not in self._written:
                (self.root / "images" / name).write_bytes(data)
                self._written.add(name)
            row[key] = f"images/{name}"
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> FolderWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
