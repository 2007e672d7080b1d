"""Dense damage maps (the warm-up's pixel-close target) and the pixel path's dense head; the
metric branches' mass pooling."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from casiqa.data.rows import DatasetFieldError
from casiqa.metrics import METRICS
from casiqa.model.config import MustSettings
from casiqa.model.must import MetricBranch
from casiqa.model.pixel import IN_CHANNELS, UNIT, PixelPath
from finetune.data import damage_maps


def _row(failures, size=64, vessel_cols=(10, 11), wire_cols=(40,)):
    vessel = np.zeros((size, size), np.uint8)
    vessel[:, list(vessel_cols)] = 255
    device = np.zeros((size, size), np.uint8)
    device[:, list(wire_cols)] = 255
    return {"id": "r0", "synthetic": Image.fromarray(np.full((size, size), 128, np.uint8)),
            "vessel_mask": Image.fromarray(vessel), "device_mask": Image.fromarray(device),
            "failures": json.dumps(failures)}


def _failure(metric, box, severity):
    return {"metric": metric, "kind": "k", "bbox": box, "severity": severity, "location": "", "params": {}}


def test_damage_lies_on_the_damaged_structure_inside_the_box():
    row = _row([_failure("guidewire_visibility", [0.0, 0.0, 1.0, 0.5], 0.6),
                _failure("branch_discernibility", [0.0, 0.0, 1.0, 1.0], 0.3),
                _failure("artifact_interference", [0.5, 0.5, 1.0, 1.0], 0.8)])
    maps = damage_maps(row, (16, 16), dilate=0)              # 4 px per cell: wire in column 10, vessel in 2
    g, b, a = (maps[METRICS.index(m)] for m in METRICS)
    assert g[:8, 10].eq(0.6).all() and g[8:].eq(0).all() and g[:, :10].eq(0).all()   # the wire, top half only
    assert b[:, 2].eq(0.3).all() and b[:, 3:].eq(0).all()                              # the vessel, all along
    assert a[8:, 8:].eq(0.8).all() and a[:8].eq(0).all()                               # artefacts: the box
    wide = damage_maps(row, (16, 16), dilate=1)
    assert wide[0, :8, 9:12].eq(0.6).all() and wide[0, :8, 8].eq(0).all()             # dilated by one cell


def test_a_wire_drawn_where_there_is_none_is_damaged_structure_too():
    row = _row([_failure("guidewire_visibility", [0.0, 0.0, 1.0, 1.0], 0.7)])
    extra = np.zeros((64, 64), np.uint8)
    extra[:, 52] = 255                                   # the displaced copy, 12 px beside the true wire
    row["extra_wire_mask"] = Image.fromarray(extra)
    g = damage_maps(row, (16, 16), dilate=0)[0]
    assert g[:, 10].eq(0.7).all() and g[:, 13].eq(0.7).all() and g[:, 11:13].eq(0).all()
    row["extra_wire_mask"] = Image.fromarray(np.zeros((32, 32), np.uint8))
    with pytest.raises(DatasetFieldError, match="extra_wire_mask is 32x32 px"):
        damage_maps(row, (16, 16))


def test_overlapping_failures_keep_the_worst_and_rows_without_records_give_none():
    row = _row([_failure("artifact_interference", [0, 0, 1, 1], 0.2), _failure("artifact_interference", [0, 0, 0.5, 0.5], 0.9)])
    a = damage_maps(row, (8, 8))[2]
    assert a[:4, :4].eq(0.9).all() and a[4:, 4:].eq(0.2).all()
    assert damage_maps({"synthetic": None}, (8, 8)) is None


def test_a_mask_of_another_size_is_refused():
    row = _row([_failure("guidewire_visibility", [0, 0, 1, 1], 0.5)])
    row["device_mask"] = Image.fromarray(np.zeros((32, 32), np.uint8))
    with pytest.raises(DatasetFieldError, match="device_mask is 32x32 px"):
        damage_maps(row, (16, 16))


def test_rows_without_masks_mark_the_whole_box():
    row = _row([_failure("guidewire_visibility", [0, 0, 0.5, 1], 1.0)])
    del row["device_mask"], row["vessel_mask"]
    g = damage_maps(row, (8, 8))[0]
    assert g[:, :4].eq(1).all() and g[:, 4:].eq(0).all()


def test_dense_head_gives_quarter_resolution_maps_and_the_same_tokens():
    path = PixelPath(dim=16, width=16, dense=3).eval()
    x = torch.randn(2, IN_CHANNELS, 2 * UNIT, 3 * UNIT)
    with torch.no_grad():
        tokens, fine = path(x, dense=True)
        plain = path(x)
    assert fine.shape == (2, 3, 2 * UNIT // 4, 3 * UNIT // 4)
    assert torch.equal(tokens, plain)
    with pytest.raises(ValueError, match="no dense head"):
        PixelPath(dim=16, width=16)(x, dense=True)
    with pytest.raises(ValueError, match="patch 1 or 2"):
        PixelPath(dim=16, width=16, patch=4, dense=3)


def test_mass_pooling_counts_what_attention_pooling_averages():
    """One damaged token or four: the attention pool sees the same average, the mass pool more."""
    torch.manual_seed(0)
    n, d = 16, 8
    bad = torch.randn(d)
    one, four = torch.zeros(n, d), torch.zeros(n, d)
    one[0], four[:4] = bad, bad
    route = torch.full((n,), 0.5)
    for pool, differ in (("attention", False), ("attention+mass", True)):
        branch = MetricBranch(d, 16, 5, pool)
        branch.score.weight.data.zero_()
        branch.score.bias.data.zero_()
        branch.score.weight.data[0, 0] = 50.0 * bad[0].sign()   # attend to the damaged tokens only
        with torch.no_grad():
            a, _, _ = branch(one, route)
            b, _, _ = branch(four, route)
        assert torch.allclose(a, b, atol=1e-4) is not differ, pool
    with pytest.raises(ValueError, match="pool must be"):
        MustSettings(pool="sum")


@pytest.mark.parametrize(("dense", "along", "own"), [(True, False, False), (True, True, False), (False, True, False),
                                                     (True, True, True)])
def test_damage_maps_feed_the_heads_identically_in_the_full_forward_and_the_warm_up(tmp_path, dense, along, own):
    """With pixel_dense (and dense_to_heads), each head reads its map's mean and max, with
    pixel_along the summary along the structures (with pixel_along_own, its own structures'); the
    warm-up's pixel-only scores still equal the full model's while the encoder gate is closed, also
    after save and reload."""
    from casiqa.model.loading import TinySpec, build_tiny, load, save
    from casiqa.model.pixel import align, images_from_patches

    settings = MustSettings(pixel_tophat=5, pixel_dense=dense, pixel_along=along, pixel_along_own=own,
                            pool="attention+mass")
    model, processor = build_tiny(TinySpec(image_size=112, hidden=64, layers=1, vision_depth=2, vision_hidden=32,
                                           must=settings))
    save(model, processor, tmp_path)
    model, processor = load(tmp_path)
    must = model.model.must.eval()
    assert must.feeds_damage == dense and (must.pixels.dense is not None) == dense and must.feeds_along == along
    assert must.settings.pixel_along_own == own and must.pixels.along_own == (own and along)  # kept by save and load
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (112, 112), dtype=np.uint8)).convert("RGB") for _ in range(3)]
    content = [{"type": "image", "image_role": r} for r in ("target", "live", "reference")] + [{"type": "text", "text": "x"}]
    text = processor.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                   add_generation_prompt=True)
    enc = processor(text=[text], images=[imgs], return_tensors="pt")
    ip = processor.image_processor
    t, live, ref = images_from_patches(enc["pixel_values"], enc["image_grid_thw"], ip.patch_size, ip.merge_size,
                                       ip.temporal_patch_size)
    x = must.pixels.channels(t, {"live": align(live, tuple(t.shape)), "reference": ref})[None]
    with torch.no_grad():
        full = model(**enc).level_logits
        alone = must.score_pixels(x)[0]
        assert torch.allclose(full, alone, atol=1e-4)
        if dense:
            assert must.score_pixels(x, dense=True)[2].shape == (1, len(METRICS), 28, 28)
            must.pixels.dense.bias.add_(3.0)   # more predicted damage: the heads see it
            assert not torch.allclose(must.score_pixels(x)[0], alone, atol=1e-4)
            alone = must.score_pixels(x)[0]
        if along:
            must.pixels.along_norm.bias.add_(1.0)   # another summary along the structures: the heads see it
            assert not torch.allclose(must.score_pixels(x)[0], alone, atol=1e-4)


@pytest.mark.parametrize(("failure", "message"), [
    ({"metric": "sharpness", "bbox": [0, 0, 1, 1]}, "needs a metric"),
    ({"metric": "guidewire_visibility", "bbox": [0, 0, 1]}, "bbox must be"),
    ({"metric": "guidewire_visibility", "bbox": [0.5, 0, 0.2, 1]}, "bbox must be"),
    ({"metric": "guidewire_visibility", "bbox": [0, 0, 1.5, 1]}, "bbox must be"),
])
def test_a_malformed_failure_record_is_named(failure, message):
    with pytest.raises(DatasetFieldError, match=f"row r0: failure 0 {message}"):
        damage_maps(_row([failure]), (8, 8))
    with pytest.raises(DatasetFieldError, match="not a JSON list"):
        damage_maps({"id": "r0", "failures": "{broken"}, (8, 8))
