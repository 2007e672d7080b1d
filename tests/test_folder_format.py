"""The annotated folder loader accepts good rows and names file and line for bad ones."""

import json

import pytest

from casiqa.data.folder import AnnotationError, read_folder


def _scores(**over):
    s = {m: {"mos": 3.0, "std": 0.5} for m in ("guidewire_visibility", "branch_discernibility", "artifact_interference")}
    s.update(over)
    return s


def _write(root, rows):
    (root / "images").mkdir(exist_ok=True)
    (root / "images" / "a.png").write_bytes(b"\x89PNG fake")
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (root / "annotations.jsonl").write_text("\n".join(lines) + "\n")


GOOD = {"id": "a", "synthetic": "images/a.png", "scores": _scores(), "split": "test"}


def test_good_row_reads_with_absolute_paths(tmp_path):
    _write(tmp_path, [GOOD, {**GOOD, "id": "b", "live": "images/a.png", "split": "train"}])
    rows = read_folder(tmp_path)
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[1]["live"] == str((tmp_path / "images" / "a.png").resolve())
    assert [r["id"] for r in read_folder(tmp_path, split="train")] == ["b"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "expected a JSON object"),
        ({**GOOD, "id": ""}, "'id'"),
        ({k: v for k, v in GOOD.items() if k != "synthetic"}, "'synthetic'"),
        ({**GOOD, "synthetic": "images/missing.png"}, "not found"),
        ({**GOOD, "scores": _scores(guidewire_visibility={"std": 1})}, "guidewire_visibility.mos is missing"),
        ({**GOOD, "scores": _scores(branch_discernibility={"mos": 6})}, "must be a number in"),
        ({**GOOD, "scores": _scores(artifact_interference={"mos": "3"})}, "must be a number in"),
        ({**GOOD, "scores": {**_scores(), "sharpness": {"mos": 3}}}, "unknown metric"),
        ({**GOOD, "scores": _scores(guidewire_visibility={"mos": 3, "std": -1})}, "std must be"),
        ({**GOOD, "scores": _scores(guidewire_visibility={"mos": 4.8, "level": "poor"})}, "contradicts"),
        ({**GOOD, "split": "dev"}, "split 'dev'"),
        (GOOD, "duplicate id"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, bad, message):
    _write(tmp_path, [GOOD, "", bad])
    with pytest.raises(AnnotationError, match=message) as err:
        read_folder(tmp_path)
    assert "annotations.jsonl:3:" in str(err.value)


def test_missing_annotations_file(tmp_path):
    with pytest.raises(AnnotationError, match="no such file"):
        read_folder(tmp_path)
