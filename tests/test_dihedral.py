"""Orientation-invariant scores: the heads averaged over the pixel path's eight flips and rotations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from casiqa.model.config import MustSettings
from casiqa.model.pixel import DIHEDRAL, UNIT, align, dihedral, images_from_patches, undo_dihedral


@pytest.mark.parametrize("shape", [(56, 56), (56, 84)])
def test_view_tokens_go_back_onto_the_given_grid(shape):
    """A token map that commutes with turns and flips (the mean of each 28 px cell) gives, for every
    view, the given image's tokens once undo_dihedral has turned them back."""
    x = torch.randn(2, 3, *shape)

    def tokens(img):  # [B, C, H, W] -> [B, N, C] and its grid
        cells = F.avg_pool2d(img, UNIT)
        return cells.flatten(2).transpose(1, 2), tuple(cells.shape[-2:])

    given, _ = tokens(x)
    seen = set()
    for k, flip in DIHEDRAL:
        view, grid = tokens(dihedral(x, k, flip))
        back = undo_dihedral(view, grid, k, flip)
        assert torch.allclose(back, given, atol=1e-6), (k, flip)
        seen.add(tuple(dihedral(x, k, flip)[0, 0].flatten()[:4].tolist()))
    assert len(DIHEDRAL) == 8 and len(seen) == 8   # eight different views


def _model(dihedral_scores: bool):
    from casiqa.model.loading import TinySpec, build_tiny

    settings = MustSettings(pixel_tophat=5, pixel_dense=True, pool="attention+mass", dihedral_scores=dihedral_scores)
    return build_tiny(TinySpec(image_size=112, hidden=64, layers=1, vision_depth=2, vision_hidden=32, must=settings))


def _inputs(processor, images):
    content = [{"type": "image", "image_role": r} for r in ("target", "live", "reference")] + [{"type": "text", "text": "x"}]
    text = processor.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                   add_generation_prompt=True)
    return processor(text=[text], images=[images], return_tensors="pt")


def test_scores_do_not_change_with_the_images_orientation():
    model, processor = _model(True)
    model.eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (112, 112), dtype=np.uint8)).convert("RGB") for _ in range(3)]
    turns = (Image.Transpose.ROTATE_90, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.TRANSPOSE)
    with torch.no_grad():
        given = model(**_inputs(processor, images)).level_logits
        for turn in turns:
            turned = model(**_inputs(processor, [im.transpose(turn) for im in images])).level_logits
            assert torch.allclose(turned, given, atol=1e-4), turn
        # without the views, the same weights score a turned image differently (so the check above can fail)
        model.model.must.settings.dihedral_scores = False
        plain = model(**_inputs(processor, images)).level_logits
        moved = [model(**_inputs(processor, [im.transpose(t) for im in images])).level_logits for t in turns]
    assert any(not torch.allclose(m, plain, atol=1e-4) for m in moved)


def test_the_score_is_the_mean_of_the_views_probabilities_and_training_sees_one_view():
    model, processor = _model(True)
    must = model.model.must
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (112, 112), dtype=np.uint8)).convert("RGB") for _ in range(3)]
    enc = _inputs(processor, images)
    ip = processor.image_processor
    t, live, ref = images_from_patches(enc["pixel_values"], enc["image_grid_thw"], ip.patch_size, ip.merge_size,
                                       ip.temporal_patch_size)
    x = must.pixels.channels(t, {"live": align(live, tuple(t.shape)), "reference": ref})[None]
    model.eval()
    with torch.no_grad():
        full = model(**enc).level_logits.softmax(dim=-1)
        views = torch.stack([must.score_pixels(dihedral(x, k, flip))[0].softmax(dim=-1) for k, flip in DIHEDRAL])
        assert torch.allclose(full, views.mean(dim=0), atol=1e-5)
        assert not torch.allclose(full, views[0], atol=1e-4)
        model.train()   # training scores the image as given: the views are for inference only
        trained = model(**enc).level_logits
        must.settings.dihedral_scores = False
        assert torch.equal(trained, model(**enc).level_logits)


def test_configs_saved_before_the_option_score_one_view():
    from casiqa.model.config import CasIqaConfig

    assert CasIqaConfig(must={"enabled": True, "pixel_path": True}).must_settings().dihedral_scores is False


def test_the_views_change_only_the_level_logits_and_one_view_turns_them_off_for_a_while():
    """The LM reads the same tokens with or without the views (so the answer's generation may skip
    them, as the assessor does with Must.one_view), and one_view restores the setting after."""
    model, processor = _model(True)
    model.eval()
    must = model.model.must
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 255, (112, 112), dtype=np.uint8)).convert("RGB") for _ in range(3)]
    enc = _inputs(processor, images)
    with torch.no_grad():
        views = model(**enc)
        with must.one_view():
            assert must.settings.dihedral_scores is False
            plain = model(**enc)
    assert must.settings.dihedral_scores is True
    assert torch.equal(views.logits, plain.logits)                       # the language model saw the same
    assert not torch.allclose(views.level_logits, plain.level_logits, atol=1e-4)


def test_damage_maps_turn_with_the_image_and_come_only_at_inference():
    """With the views, a metric's damage map (the evidence boxes' source) is the views' mean turned
    back onto the image: a turned image gives the turned map. Training passes make none."""
    model, processor = _model(True)
    model.eval()
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (112, 112), dtype=np.uint8)).convert("RGB") for _ in range(3)]
    get = model.model.get_image_features
    with torch.no_grad():
        enc = _inputs(processor, images)
        given = get(enc["pixel_values"], enc["image_grid_thw"]).damage[0]
        assert given.shape == (3, 112 // 4, 112 // 4) and 0 <= given.min() and given.max() <= 1
        for turn, (k, flip) in ((Image.Transpose.ROTATE_90, (1, False)), (Image.Transpose.FLIP_LEFT_RIGHT, (0, True))):
            enc = _inputs(processor, [im.transpose(turn) for im in images])
            turned = get(enc["pixel_values"], enc["image_grid_thw"]).damage[0]
            assert torch.allclose(turned, dihedral(given, k, flip), atol=1e-5), turn
        model.model.must.settings.dihedral_scores = False          # one view: the map of the image as given
        enc = _inputs(processor, images)
        plain = get(enc["pixel_values"], enc["image_grid_thw"]).damage[0]
        assert plain.shape == given.shape and not torch.allclose(plain, given, atol=1e-4)
        model.train()
        damage = model(**enc).damage
        assert damage is None or all(d is None for d in damage)
