"""MUST's pixel path: pixels recovered from Qwen2.5-VL patches, one feature per token, and the
pixel warm-up training the same heads the full model uses."""

import numpy as np
import pytest
import torch
from PIL import Image

from casiqa.metrics import LEVELS, METRICS
from casiqa.model.pixel import IN_CHANNELS, UNIT, PixelPath, images_from_patches


def _grey(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return ((np.sin(xx / 7.0) + np.cos(yy / 11.0)) * 60 + 128 + rng.normal(0, 5, (h, w))).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(("h", "w"), [(256, 256), (300, 200)])
def test_images_from_patches_inverts_the_processor_layout(tiny, h, w):
    _, processor = tiny
    img = Image.fromarray(_grey(h, w)).convert("RGB")
    enc = processor.image_processor(images=[img], return_tensors="pt")
    ip = processor.image_processor
    (x,) = images_from_patches(enc["pixel_values"], enc["image_grid_thw"], ip.patch_size, ip.merge_size,
                               ip.temporal_patch_size)
    _, gh, gw = enc["image_grid_thw"][0].tolist()
    assert tuple(x.shape) == (gh * ip.patch_size, gw * ip.patch_size)
    resized = np.asarray(img.convert("L").resize((x.shape[1], x.shape[0]), Image.BICUBIC), np.float32)
    assert np.corrcoef(x.numpy().ravel(), resized.ravel())[0, 1] > 0.99  # the same picture, normalised


@pytest.mark.parametrize("patch", [4, 7, 14])
def test_pixel_path_gives_one_feature_per_token(patch):
    path = PixelPath(dim=32, width=16, patch=patch).eval()
    x = torch.randn(2, IN_CHANNELS, 5 * UNIT, 3 * UNIT)
    with torch.no_grad():
        out = path(x)
        alone = path(x[1:])
    assert out.shape == (2, 15, 32)
    assert torch.allclose(out[1], alone[0], atol=1e-5)  # in eval mode a sample does not depend on its batch


def test_channels_mark_absent_images():
    path = PixelPath(dim=8, width=8)
    t, a = torch.rand(56, 56), torch.rand(56, 56)
    both = path.channels(t, {"live": a})
    assert both.shape == (IN_CHANNELS, 56, 56)
    assert torch.equal(both[1], a) and torch.allclose(both[2], path.diff_gain * (t - a)) and both[3].eq(1).all()
    assert both[4:].eq(0).all()  # reference absent: image, difference and presence planes are zero


def test_warmup_scores_equal_the_full_forward_while_the_gate_is_closed(tiny):
    from casiqa.model.pixel import align

    model, processor = tiny
    imgs = [Image.fromarray(_grey(256, 256, s)).convert("RGB") for s in range(3)]
    content = [{"type": "image", "image_role": r} for r in ("target", "live", "reference")] + [{"type": "text", "text": "x"}]
    text = processor.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                   add_generation_prompt=True)
    enc = processor(text=[text], images=[imgs], return_tensors="pt")
    must = model.model.must
    with torch.no_grad():
        full = model(**enc).level_logits
        ip = processor.image_processor
        t, live, ref = images_from_patches(enc["pixel_values"], enc["image_grid_thw"], ip.patch_size, ip.merge_size,
                                           ip.temporal_patch_size)
        x = must.pixels.channels(t, {"live": align(live, tuple(t.shape)), "reference": ref})[None]
        alone, _ = must.score_pixels(x)
    assert full.shape == alone.shape == (1, len(METRICS), len(LEVELS))
    assert torch.allclose(full, alone, atol=1e-4)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_warmup_trains_the_quality_path_and_lowers_its_loss(tiny_dir, bf16):
    from casiqa.model.loading import load
    from finetune.warmup import PixelRows, WarmupConfig, warm_up

    model, _ = load(tiny_dir)
    must = model.model.must
    rng = np.random.default_rng(0)
    n, size = 16, 112
    # a learnable toy: the artefact score falls with the amount of noise added to the target
    noise = rng.uniform(0, 1, n)
    live = [torch.tensor(rng.normal(0, 0.3, (size, size)), dtype=torch.float16) for _ in range(n)]
    target = [(live[i].float() + noise[i] * torch.randn(size, size)).half() for i in range(n)]
    mos = np.stack([np.full(n, 4.0), np.full(n, 3.0), 5.0 - 4.0 * noise], 1).astype(np.float32)
    from casiqa.model.levels import soft_levels

    data = PixelRows(target, [{"live": x} for x in live], soft_levels(torch.tensor(mos), torch.full((n, 3), 0.3)), mos,
                     [None] * n)
    before = {k: v.clone() for k, v in must.state_dict().items()}
    log = warm_up(model, data, data, WarmupConfig(epochs=6, batch_size=8, learning_rate=3e-3, aux_drop=0.0, augment=True,
                                                      bf16=bf16))
    assert len(log) == 6 and log[-1]["loss"] < log[0]["loss"]
    after = must.state_dict()
    for key in ("pixels.stem.0.weight", "router.proj.weight", "branches.2.head.3.weight"):
        assert not torch.equal(before[key], after[key]), key
    for key in ("depth.projs.0.0.weight", "images.aligned.live.0.weight"):  # the encoder side is not touched
        assert torch.equal(before[key], after[key]), key


def test_configs_saved_before_the_pixel_path_load_without_it():
    from casiqa.model.config import CasIqaConfig

    assert CasIqaConfig(must={"enabled": True}).must_settings().pixel_path is False
    assert CasIqaConfig(must={"enabled": True, "pixel_path": True}).must_settings().pixel_path is True


def test_black_tophat_keeps_thin_dark_lines_and_drops_wide_ones():
    from casiqa.model.pixel import black_tophat

    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    image = 0.5 + 0.002 * xx                # a smooth background
    image[:, 20] -= 0.1                     # a wire, 1 px wide
    image[:, 40:50] -= 0.1                  # a vessel wider than the filter
    th = black_tophat(image, 5)
    assert th[:, 20].mean() == pytest.approx(0.1, abs=0.01)
    assert th[:, 42:48].abs().max() < 0.01 and th[:, 2:15].abs().max() < 0.01
    batch = torch.stack([image, torch.zeros_like(image)])[None]           # [1, 2, H, W]
    out = black_tophat(batch, 5)
    assert torch.allclose(out[0, 0], th) and out[0, 1].eq(0).all()      # batched; an absent plane stays zero


def test_tophat_margin_drops_the_collimator_wedges_at_the_edge_and_keeps_the_wire():
    """A collimated frame's dark cut corners meet the edge in wedges narrower than the filter, which
    the top-hat takes for the strongest "wires" in the frame (measured on the phantom: half of the
    live frame's along-the-devices weight lay in them); with the margin only the wire is left."""
    from casiqa.model.config import MustSettings
    from casiqa.model.pixel import ALONG, along_weights
    from finetune.config import CasIqaArguments

    yy, xx = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")
    live = torch.full((112, 112), 0.6)
    live[xx + yy < 30] = 0.0                                  # an octagonal field: one cut corner
    live[20:100, 60] -= 0.1                                   # the wire, 1 px wide, inside the field
    planes = {}
    for margin in (False, True):
        path = PixelPath(dim=8, width=8, tophat=5, along=True, tophat_margin=margin).eval()
        x = path.channels(live, {"live": live})[None]
        planes[margin] = th = path.tophat_planes(x)[0, 1]
        w = along_weights(torch.cat([x, path.derived_planes(x)], dim=1))[0, ALONG.index("live devices")]
        on_wire = w[:, 15].sum() / w.sum()                   # the wire's column of 4 px cells
        if margin:
            assert th[:5].eq(0).all() and th[:, :5].eq(0).all() and th[-5:].eq(0).all()
            assert on_wire > 0.95
        else:
            assert th[:5, :30].max() > th[:, 60].max()       # the wedge's tip outshines the wire
            assert on_wire < 0.5
    assert torch.equal(planes[True][5:-5, 5:-5], planes[False][5:-5, 5:-5])   # inside: the same filter
    for settings in (MustSettings, CasIqaArguments):
        with pytest.raises(ValueError, match="pixel_tophat_margin .* needs pixel_tophat"):
            settings(pixel_tophat_margin=True)


def test_tophat_planes_are_added_in_forward():
    from casiqa.model.pixel import IMAGE_PLANES, black_tophat, in_channels

    path = PixelPath(dim=8, width=8, tophat=5).eval()
    t, a = torch.rand(56, 56), torch.rand(56, 56)
    x = path.channels(t, {"reference": a})[None]
    assert x.shape[1] == IN_CHANNELS and path.in_channels == in_channels(5) == IN_CHANNELS + len(IMAGE_PLANES)
    assert torch.allclose(x[0, IMAGE_PLANES[2]], a)  # the reference plane the top-hat reads
    with torch.no_grad():
        assert path(x).shape == (1, 4, 8)
    assert black_tophat(x[:, list(IMAGE_PLANES)], 5)[0, 1].eq(0).all()  # live absent: its top-hat plane is zero


@pytest.mark.parametrize("compare", [[], [3, 9]])
def test_cached_derived_planes_give_what_forward_computes(compare):
    """The warm-up caches the derived planes (top-hat, device comparison) once; with an auxiliary
    image dropped, the planes that need it are zeroed, so the stem sees exactly what forward
    would compute."""
    import random

    from casiqa.model.config import MustSettings
    from casiqa.model.must import Must
    from finetune.warmup import PixelRows, _channels

    must = Must(MustSettings(pixel_tophat=5, pixel_compare=compare), dim=16, patch_dim=8, metrics=METRICS,
                n_levels=len(LEVELS), n_paths=1).eval()
    path = must.pixels
    n = 8
    target = [torch.rand(56, 56).half() for _ in range(n)]
    aux = [{"live": torch.rand(56, 56).half(), "reference": torch.rand(56, 56).half()} for _ in range(n)]
    planes = [path.derived_planes(path.channels(t.float(), {r: a.float() for r, a in x.items()})[None])[0].half()
              for t, x in zip(target, aux, strict=True)]
    plain = PixelRows(target, aux, torch.zeros(n, 3, 5), np.zeros((n, 3)), [None] * n)
    cached = PixelRows(target, aux, torch.zeros(n, 3, 5), np.zeros((n, 3)), [None] * n, tophat=planes)
    a = _channels(must, plain, list(range(n)), 0.5, random.Random(3))
    b = _channels(must, cached, list(range(n)), 0.5, random.Random(3))
    assert a.shape[1] == IN_CHANNELS and b.shape[1] == path.in_channels
    assert a[:, 3].eq(0).any() and a[:, 6].eq(1).any()   # some aux images were dropped, some kept
    assert (a[:, 3, 0, 0] + a[:, 6, 0, 0]).eq(1).any()     # and some rows kept one of the two
    with torch.no_grad():
        assert torch.allclose(path(a), path(b), atol=2e-3)   # float16 cache
    with pytest.raises(ValueError, match=f"takes {IN_CHANNELS} planes"):
        path(a[:, :5])


def _wire_scene(shift: int = 0, fade: float = 1.0):
    """Top-hat planes [1, 3, H, W] of a scene with a vessel 3 px wide holding a wire 1 px wide:
    the target's wire shifted by `shift` px and scaled by `fade`; the reference has the vessel
    alone, the live frame the true wire alone (no contrast)."""
    vessel = torch.zeros(64, 64)
    vessel[:, 30:33] = 0.3
    wire_true = torch.zeros(64, 64)
    wire_true[:, 31] = 0.2
    target = vessel + fade * torch.roll(wire_true, shift, dims=1)
    return torch.stack([target, wire_true, vessel])[None]


def test_device_comparison_grades_a_displaced_wire_by_its_distance():
    from casiqa.model.pixel import device_comparison

    both = torch.ones(1)
    sizes = (1, 5, 13)
    same = device_comparison(_wire_scene(), both, sizes)
    assert same.abs().max() < 1e-6                               # the wire where the live frame has it: nothing
    for shift, caught in ((3, 2), (8, 3)):                       # missing and extra at the windows narrower than 2 x shift
        planes = device_comparison(_wire_scene(shift), both, sizes)
        mass = planes.sum(dim=(-2, -1))[0].reshape(len(sizes), 2)    # [size, (missing, extra)]
        assert (mass[:caught] > 1.0).all() and (mass[caught:] < 1e-6).all(), (shift, mass)
    faded = device_comparison(_wire_scene(fade=0.3), both, sizes).sum(dim=(-2, -1))[0].reshape(len(sizes), 2)
    assert (faded[:, 0] > 1.0).all() and (faded[:, 1] < 1e-6).all()   # faded: missing at every tolerance, nothing extra
    assert device_comparison(_wire_scene(8), torch.zeros(1), sizes).eq(0).all()  # without both aux images: zero


def test_device_comparison_planes_are_added_in_forward():
    from casiqa.model.pixel import in_channels

    path = PixelPath(dim=8, width=8, tophat=5, compare=(3, 9)).eval()
    assert path.in_channels == in_channels(5) + 4
    t, live, ref = torch.rand(56, 56), torch.rand(56, 56), torch.rand(56, 56)
    x = path.channels(t, {"live": live, "reference": ref})[None]
    with torch.no_grad():
        from_plain = path(x)
        from_cached = path(torch.cat([x, path.derived_planes(x)], dim=1))   # as the warm-up caches them
    assert from_plain.shape == (1, 4, 8) and torch.allclose(from_plain, from_cached)
    with pytest.raises(ValueError, match="set tophat"):
        PixelPath(dim=8, width=8, compare=(3,))
    with pytest.raises(ValueError, match="odd"):
        PixelPath(dim=8, width=8, tophat=5, compare=(4,))


def test_token_pool_max_mean_also_says_how_much_of_a_window_responds():
    from casiqa.model.pixel import TokenPool

    one, full = torch.zeros(1, 1, 7, 7), torch.ones(1, 1, 7, 7)
    one[..., 3, 3] = 1.0                                   # a single bright pixel: a short stub of wire
    assert torch.equal(TokenPool(7)(one), TokenPool(7)(full))  # max-pooling cannot tell them apart
    a, b = TokenPool(7, "max+mean")(one), TokenPool(7, "max+mean")(full)
    assert a.shape == (1, 2, 1, 1) and a[0, 0] == b[0, 0] and torch.allclose(a[0, 1], torch.tensor(1 / 49)) and b[0, 1] == 1
    with pytest.raises(ValueError, match="pixel pool"):
        TokenPool(7, "mean")


def test_pixel_path_with_max_mean_pool_gives_one_feature_per_token():
    path = PixelPath(dim=32, width=16, tophat=5, dense=3, pool="max+mean").eval()
    x = torch.randn(2, IN_CHANNELS, 3 * UNIT, 2 * UNIT)
    with torch.no_grad():
        tokens, fine = path(x, dense=True)
    assert tokens.shape == (2, 6, 32) and fine.shape == (2, 3, 3 * UNIT // 4, 2 * UNIT // 4)
    with pytest.raises(ValueError, match="pixel patch 1 or 2"):
        PixelPath(dim=32, width=16, patch=4, pool="max+mean")


def test_score_loss_is_the_squared_error_of_the_expected_score():
    from casiqa.model.levels import expected_score
    from finetune.warmup import score_loss

    logits = torch.zeros(2, len(METRICS), len(LEVELS), requires_grad=True)  # uniform: expected score 3
    mos = torch.tensor([[3.0, 5.0, 1.0], [3.0, 3.0, 3.0]])
    loss = score_loss(logits, mos)
    assert torch.isclose(loss, torch.tensor((0 + 4 + 4 + 0 + 0 + 0) / 6))
    weighted = score_loss(logits, mos, torch.tensor([0.0, 1.0, 0.0]))  # only branches count, weights normalised
    assert torch.isclose(weighted, torch.tensor(3 * 4 / 6))
    loss.backward()
    step = logits - 1.0 * logits.grad
    moved = expected_score(step) - 3.0
    assert moved[0, 1] > 0 and moved[0, 2] < 0 and moved[1].abs().max() < 1e-6  # towards each MOS, none where met


@pytest.mark.parametrize("pool", ["attention", "attention+mass"])
def test_metric_heads_score_a_batch_as_they_score_each_sample(pool):
    from casiqa.model import MustSettings
    from casiqa.model.must import Must

    torch.manual_seed(0)
    must = Must(MustSettings(pixel_dense=True, pool=pool), dim=32, patch_dim=16, metrics=METRICS,
                n_levels=len(LEVELS), n_paths=1).eval()
    for p in must.parameters():  # every residual branch starts at zero: give them weights
        torch.nn.init.normal_(p, std=0.2)
    q, damage = torch.randn(4, 9, 32), torch.rand(4, len(METRICS), 2)
    with torch.no_grad():
        batched = must.score(q, damage)
        single = [must.score(q[b], damage[b]) for b in range(4)]
    for k, name in enumerate(("logits", "routing", "router logits", "adaptations")):
        assert torch.allclose(batched[k], torch.stack([s[k] for s in single]), atol=1e-5), name


def test_dense_loss_weights_the_damaged_cells():
    from finetune.warmup import dense_loss

    maps = torch.zeros(1, 1, 4, 4)
    maps[..., 0, 0] = 0.6                                   # one damaged cell of 16
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    even = dense_loss(logits, maps)
    assert torch.isclose(even, torch.nn.functional.binary_cross_entropy_with_logits(logits, maps))
    dense_loss(logits, maps, damaged_weight=10.0).backward()
    g = logits.grad[0, 0]
    # the damaged cell's gradient (sigmoid(0) - 0.6) is 10x its even-weight size; the others' are unchanged
    assert torch.isclose(g[0, 0], torch.tensor(10 * (0.5 - 0.6) / 16)) and torch.isclose(g[1, 1], torch.tensor(0.5 / 16))
