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
from finetune.data import damage_maps, structure_maps


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


def test_structure_maps_mark_the_true_devices_and_vessels_damaged_or_not():
    row = _row([])                                       # no failure: the structures are there all the same
    devices, vessels = structure_maps(row, (16, 16))
    assert devices[:, 10].eq(1).all() and devices.sum() == 16
    assert vessels[:, 2].eq(1).all() and vessels.sum() == 16
    del row["vessel_mask"]
    assert structure_maps(row, (16, 16)) is None         # a folder without masks: no target, not a wrong one
    row = _row([])
    row["device_mask"] = Image.fromarray(np.zeros((32, 32), np.uint8))
    with pytest.raises(DatasetFieldError, match="device_mask is 32x32 px"):
        structure_maps(row, (16, 16))


def test_structure_channels_follow_the_damage_maps_and_leave_the_heads_alone():
    """pixel_structure adds the structures' channels after the metrics' maps; the heads read the
    metrics' maps only, so the structure channels cannot move a score."""
    from casiqa.model.must import STRUCTURES, Must

    with pytest.raises(ValueError, match="needs pixel_dense"):
        MustSettings(pixel_structure=True)
    torch.manual_seed(0)
    settings = MustSettings(pixel_tophat=5, pixel_dense=True, pixel_structure=True, pixel_width=16, hidden=16)
    must = Must(settings, dim=16, patch_dim=8, metrics=METRICS, n_levels=5, n_paths=1).eval()
    x = torch.randn(2, must.pixels.in_channels, 2 * UNIT, 2 * UNIT)
    with torch.no_grad():
        logits, _, fine = must.score_pixels(x, dense=True)
        assert fine.shape[1] == len(METRICS) + len(STRUCTURES)
        must.pixels.dense.bias[len(METRICS):] += 5.0      # the structure channels only
        assert torch.equal(must.score_pixels(x)[0], logits)
        must.pixels.dense.bias[0] += 5.0                  # a metric's map: its head sees it
        assert not torch.equal(must.score_pixels(x)[0], logits)


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
            a, _ = branch(one, route)
            b, _ = branch(four, route)
        assert torch.allclose(a, b, atol=1e-4) is not differ, pool
    with pytest.raises(ValueError, match="pool must be"):
        MustSettings(pool="sum")


def test_damage_maps_feed_the_heads_identically_in_the_full_forward_and_the_warm_up(tmp_path):
    """With pixel_dense (and dense_to_heads), each head reads its map's mean and max; the warm-up's
    pixel-only scores still equal the full model's while the encoder gate is closed, also after
    save and reload."""
    from casiqa.model.loading import TinySpec, build_tiny, load, save
    from casiqa.model.pixel import align, images_from_patches

    settings = MustSettings(pixel_tophat=5, pixel_dense=True, pool="attention+mass")
    model, processor = build_tiny(TinySpec(image_size=112, hidden=64, layers=1, vision_depth=2, vision_hidden=32,
                                           must=settings))
    save(model, processor, tmp_path)
    model, processor = load(tmp_path)
    must = model.model.must.eval()
    assert must.feeds_damage and must.pixels.dense is not None
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
        alone, _, fine = must.score_pixels(x, dense=True)
        assert torch.allclose(full, alone, atol=1e-4)
        assert fine.shape == (1, len(METRICS), 28, 28)
        must.pixels.dense.bias.add_(3.0)   # more predicted damage: the heads see it
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


def test_warmup_learns_the_structure_maps():
    """With structure_weight the dense head's structure channels learn where a structure is: a
    dark line in the live frame, its cells marked, found better after training than before."""
    import random
    from types import SimpleNamespace

    from casiqa.model.levels import soft_levels
    from casiqa.model.must import Must
    from finetune.warmup import PixelRows, WarmupConfig, _channels, warm_up

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    settings = MustSettings(pixel_tophat=5, pixel_dense=True, pixel_structure=True, pixel_width=16, hidden=16)
    must = Must(settings, dim=16, patch_dim=8, metrics=METRICS, n_levels=5, n_paths=1)
    n, size = 16, 56
    live, found = [], []
    for _ in range(n):
        image = torch.tensor(rng.normal(0.0, 0.05, (size, size)), dtype=torch.float32)
        col = int(rng.integers(4, size - 4))
        image[:, col] -= 1.0                                   # a wire
        where = torch.zeros(2, size // 4, size // 4)
        where[0, :, col // 4] = 1.0
        live.append(image.half())
        found.append(where.half())
    mos = np.full((n, len(METRICS)), 3.0, np.float32)
    data = PixelRows([x.clone() for x in live], [{"live": x} for x in live],
                     soft_levels(torch.tensor(mos), torch.full((n, 3), 0.3)), mos, [None] * n, structure=found)

    truth = torch.stack(found).float()[:, 0] > 0

    def separation() -> float:
        """Mean predicted 'device' on the wire's cells minus elsewhere."""
        must.eval()
        with torch.no_grad():
            x = _channels(must, data, list(range(n)), 0.0, random.Random(0))
            p = torch.sigmoid(must.score_pixels(x, dense=True)[2][:, len(METRICS)].float())
        return float(p[truth].mean() - p[~truth].mean())

    before = separation()
    warm_up(SimpleNamespace(must=must), data, None, WarmupConfig(epochs=20, batch_size=8, learning_rate=3e-3,
                                                                aux_drop=0.0, structure_weight=1.0))
    assert separation() > before + 0.2     # measured: ~0.0 before, ~0.47 after
    with pytest.raises(ValueError, match="rows cached with them"):
        warm_up(SimpleNamespace(must=must), PixelRows(data.target, data.aux, data.levels, mos, [None] * n), None,
                WarmupConfig(epochs=1, structure_weight=1.0))
