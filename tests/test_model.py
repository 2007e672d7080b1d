"""The tiny CAS-IQA VLM: tokenizer, MUST token bookkeeping, routing maps, save/reload, strict loading."""

import numpy as np
import pytest
import torch
from PIL import Image

from casiqa.metrics import LEVELS, METRICS
from casiqa.model.tokenizer import level_token_ids


def _image(h=256, w=256, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


def _batch(processor, aux_counts, size=(256, 256)):
    texts, images = [], []
    for k, n_aux in enumerate(aux_counts):
        roles = ["target", "live", "reference"][: 1 + n_aux]
        content = [{"type": "image", "image_role": r} for r in roles] + [{"type": "text", "text": "Assess"}]
        texts.append(processor.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                             add_generation_prompt=True))
        images.append([_image(*size, seed=10 * k + j) for j in range(len(roles))])
    return processor(text=texts, images=images, return_tensors="pt", padding=True)


def test_each_level_word_is_one_token(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    ids = level_token_ids(tok)
    assert len(set(ids)) == len(LEVELS)
    for level in LEVELS:
        assert len(tok.encode(" " + level, add_special_tokens=False)) == 1
        assert tok.decode(tok.encode(level, add_special_tokens=False)) == level


@pytest.mark.parametrize("aux_counts", [[0], [1], [2], [0, 2, 1]])
def test_must_keeps_visual_token_count(tiny, aux_counts):
    model, processor = tiny
    enc = _batch(processor, aux_counts)
    with torch.no_grad():
        feats = model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"])
        plain = model.model.visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"]).pooler_output
        out = model(**enc)
    n_pad = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert sum(t.shape[0] for t in feats.pooler_output) == n_pad == plain.shape[0]
    # every residual path of an untrained MUST starts at zero: it passes the encoder's tokens through
    assert torch.allclose(torch.cat(feats.pooler_output), plain, atol=1e-5)
    assert out.level_logits.shape == (len(aux_counts), len(METRICS), len(LEVELS))
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize(("h", "w"), [(256, 256), (224, 336), (300, 200)])
def test_routing_maps_have_the_token_grid(tiny, h, w):
    model, processor = tiny
    enc = _batch(processor, [1], size=(h, w))
    with torch.no_grad():
        out = model(**enc)
    t, gh, gw = enc["image_grid_thw"][0].tolist()
    routing = out.routing[0]
    assert routing.shape == (gh // 2, gw // 2, len(METRICS))
    assert torch.allclose(routing.sum(-1), torch.ones(gh // 2, gw // 2), atol=1e-5)


def test_one_target_per_sample_is_required(tiny):
    model, processor = tiny
    enc = processor(text=["<|live|><|vision_start|><|image_pad|><|vision_end|>x"], images=[[_image()]], return_tensors="pt")
    with pytest.raises(ValueError, match="exactly one"):
        model(**enc)


def test_save_reload_is_identical(tiny, tmp_path):
    from casiqa.model.loading import load, save

    model, processor = tiny
    enc = _batch(processor, [2, 0])
    with torch.no_grad():
        model.model.must.images.cross_gate.fill_(0.5)  # open a gate so fusion is exercised
        before = model(**enc)
        save(model, processor, tmp_path)
        again, processor2 = load(tmp_path)
        after = again(**enc)
        model.model.must.images.cross_gate.zero_()
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.level_logits, after.level_logits)
    assert processor2.tokenizer.chat_template == processor.tokenizer.chat_template


def test_a_checkpoint_with_a_missing_key_is_refused(tiny_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from casiqa.model.loading import CheckpointError, load

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    weights = load_file(bad / "model.safetensors")
    dropped = next(k for k in weights if "must.router" in k)
    del weights[dropped]
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing weight"):
        load(bad)
    with pytest.raises(CheckpointError, match="no config.json"):
        load(tmp_path / "nowhere")


def test_must_off_runs_the_same_code(tmp_path):
    from casiqa.model import MustSettings
    from casiqa.model.loading import TinySpec, build_tiny

    model, processor = build_tiny(TinySpec(must=MustSettings(enabled=False), hidden=64, layers=1, vision_depth=2))
    enc = _batch(processor, [2, 0])
    with torch.no_grad():
        out = model(**enc)
    assert out.level_logits.shape == (2, 3, 5) and out.routing == (None, None)
    assert not any("must.depth" in n for n, _ in model.named_parameters())


def test_head_loss_from_soft_targets(tiny):
    from casiqa.model.levels import soft_levels

    model, processor = tiny
    enc = _batch(processor, [0, 1])
    targets = soft_levels(torch.tensor([[1.2, 3.0, 4.8], [2.0, 2.5, 5.0]]), torch.tensor([[0.4, 0.6, 0.3], [0.5, 0.5, 0.0]]))
    out = model(**enc, level_targets=targets)
    assert out.head_loss is not None and out.head_loss.item() > 0
    out.head_loss.backward()
    assert model.model.must.branches[0].head[-1].weight.grad.abs().sum() > 0
    model.zero_grad()
