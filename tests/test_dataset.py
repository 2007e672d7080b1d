"""Built sets: determinism, score coverage and independence, alignment, splits, HF and folder output."""

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from casiqa.metrics import LEVELS, METRICS
from casiqa.phantom.build import BuildConfig, build, generate
from casiqa.phantom.case import anatomy_cases
from casiqa.phantom.config import PhantomConfig

SMALL = PhantomConfig(size=128)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "phantom_config.json"}


def test_same_seed_same_bytes_across_worker_counts(tmp_path):
    a = build(SMALL, BuildConfig(out=str(tmp_path / "a"), n=9, seed=3, format="folder", workers=1), progress=False)
    b = build(SMALL, BuildConfig(out=str(tmp_path / "b"), n=9, seed=3, format="folder", workers=2), progress=False)
    assert a == b
    files_a, files_b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert len(files_a) > 9 and files_a == files_b
    build(SMALL, BuildConfig(out=str(tmp_path / "c"), n=9, seed=4, format="folder", workers=1), progress=False)
    assert not filecmp.cmp(tmp_path / "a" / "annotations.jsonl", tmp_path / "c" / "annotations.jsonl", shallow=False)


@pytest.fixture(scope="module")
def rows():
    """~300 cases' annotations (no writing): the statistics of a built set."""
    cfg = PhantomConfig(size=192)
    return [row for row, _ in generate(cfg, BuildConfig(n=300, seed=1, workers=2), progress=False)]


def test_scores_span_the_scale_and_metrics_are_independent(rows):
    mos = np.array([[r["scores"][m]["mos"] for m in METRICS] for r in rows])  # [N, 3]
    for j, m in enumerate(METRICS):
        assert mos[:, j].min() <= 1.5 and mos[:, j].max() >= 4.75, m
        levels = {r["scores"][m]["level"] for r in rows}
        assert levels == set(LEVELS), (m, levels)
    corr = np.corrcoef(mos.T)
    off = corr[np.triu_indices(3, 1)]
    assert np.all(np.abs(off) < 0.3), corr
    # clean, single and mixed failures all occur
    n_fail = np.array([len(r["failures"]) for r in rows])
    assert (n_fail == 0).any() and (n_fail == 1).any() and (n_fail >= 3).any()


def test_splits_do_not_share_anatomies(rows):
    by_split: dict[str, set[int]] = {}
    for r in rows:
        by_split.setdefault(r["split"], set()).add(r["anatomy"])
    assert set(by_split) == {"train", "validation", "test"}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["validation"])
    assert not (by_split["validation"] & by_split["test"])


def test_extra_training_cases_leave_the_first_cases_split_alone():
    """`extra_train` appends training cases from new anatomies; the first n keep their rows and split."""
    base = [row for row, _ in generate(SMALL, BuildConfig(n=31, seed=2, workers=1), progress=False)]
    more = [row for row, _ in generate(SMALL, BuildConfig(n=31, seed=2, workers=1, extra_train=8), progress=False)]
    assert len(more) == 39
    assert [(r["id"], r["split"], r["scores"]) for r in more[:31]] == [(r["id"], r["split"], r["scores"]) for r in base]
    extra = more[31:]
    assert {r["split"] for r in extra} == {"train"}
    assert not {r["anatomy"] for r in extra} & {r["anatomy"] for r in base}
    assert len({r["id"] for r in more}) == 39
    with pytest.raises(ValueError, match="extra_train"):
        BuildConfig(extra_train=-1)


def test_masks_align_with_images():
    from scipy import ndimage

    cfg = PhantomConfig(size=256)
    for anatomy in range(3):
        case = anatomy_cases(5, anatomy, cfg)[0]
        live = case.images["live"].astype(float)
        ref = case.images["reference"].astype(float)
        vessels = case.images["vessel_mask"] > 0
        devices = case.images["device_mask"] > 0

        def contrast(mask, live=live, ref=ref, devices=devices):  # how much darker the reference is
            inside = mask & ~ndimage.binary_dilation(devices, iterations=2)
            return float(np.median((live - ref)[inside]))

        # contrast darkens the masked vessels, and the mask sits where it is darkest: shifting it
        # by 8 px (more than most vessel radii) in any direction loses most of the contrast
        aligned = contrast(vessels)
        assert aligned >= 4
        for dy, dx in ((8, 0), (-8, 0), (0, 8), (0, -8)):
            assert contrast(np.roll(vessels, (dy, dx), axis=(0, 1))) < 0.6 * aligned
        # away from vessels and devices the two differ only by noise
        away = ~ndimage.binary_dilation(vessels | devices, iterations=4)
        assert abs(np.median((ref - live)[away])) <= 1.0
        # the guidewire (label 255) is darker in the live frame than the ring around it
        wire = case.images["device_mask"] == 255
        ring = ndimage.binary_dilation(wire, iterations=4) & ~ndimage.binary_dilation(wire, iterations=2) & ~devices
        assert np.median(live[wire]) < np.median(live[ring]) - 5


def test_hf_dataset_round_trip_16_bit(tmp_path):
    from datasets import load_from_disk

    cfg = PhantomConfig(size=128, bit_depth=16)
    counts = build(cfg, BuildConfig(out=str(tmp_path), n=12, seed=2, workers=1), progress=False)
    dd = load_from_disk(str(tmp_path))
    assert {s: len(dd[s]) for s in dd} == {s: n for s, n in counts.items() if n}
    row = dd["train"][0]
    img = np.asarray(row["synthetic"])
    assert img.shape == (128, 128) and img.dtype == np.uint16 and img.max() > 255
    assert set(row["scores"]) == set(METRICS)
    assert row["scores"]["guidewire_visibility"]["level"] in LEVELS
    assert isinstance(json.loads(row["failures"]), list)
    assert np.asarray(row["vessel_mask"]).shape == (128, 128)


def test_folder_images_match_annotations(tmp_path):
    from casiqa.data.folder import read_folder

    build(SMALL, BuildConfig(out=str(tmp_path), n=6, seed=0, format="folder", workers=1), progress=False)
    rows = read_folder(tmp_path)
    assert len(rows) == 6
    cases = anatomy_cases(0, 0, SMALL)
    first = next(r for r in rows if r["id"] == cases[0].id)
    assert np.array_equal(np.asarray(Image.open(first["synthetic"])), cases[0].images["synthetic"])
    assert first["scores"]["branch_discernibility"]["mos"] == round(cases[0].scores["branch_discernibility"].mos, 4)
    # live and reference are shared by the variants of one anatomy: one file each
    assert len({r["live"] for r in rows if r["anatomy"] == 0}) == 1
