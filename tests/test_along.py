"""Pooling along the structures (MustSettings.pixel_along): the pixel path's H/4 features averaged
along the live frame's devices, the target's devices and the true vessels, read by every head.
That the heads read it identically in the full forward and the warm-up is tested with the damage
maps (tests/test_damage.py)."""

import numpy as np
import pytest
import torch

from casiqa.metrics import METRICS
from casiqa.model.config import MustSettings
from casiqa.model.must import Must
from casiqa.model.pixel import ALONG, ALONG_OF, IN_CHANNELS, UNIT, PixelPath, along_mask, along_pool, along_weights
from finetune.config import CasIqaArguments


def _planes(target, live=None, reference=None, tophat=5):
    path = PixelPath(dim=8, width=8, tophat=tophat)
    aux = {r: torch.as_tensor(a) for r, a in (("live", live), ("reference", reference)) if a is not None}
    x = path.channels(torch.as_tensor(target), aux)[None]
    return torch.cat([x, path.derived_planes(x)], dim=1)


def _scene(size=56):
    """A flat background, a dark wire in column 20 (live frame and target) and a dark vessel in
    column 40 (reference and target): display grey, darker is lower."""
    base = np.full((size, size), 0.6, np.float32)
    live, reference = base.copy(), base.copy()
    live[:, 20] -= 0.3
    reference[:, 39:42] -= 0.3
    target = reference.copy()
    target[:, 20] -= 0.3
    return target, live, reference


def test_weights_lie_on_each_structure_and_vanish_without_its_image():
    target, live, reference = _scene()
    w = along_weights(_planes(target, live, reference))                    # [1, 3, 14, 14]
    assert w.shape == (1, len(ALONG), 14, 14)
    devices, drawn, vessels = w[0]
    assert devices[:, 20 // 4].min() > 0 and devices.sum() == devices[:, 20 // 4].sum()
    assert drawn[:, 20 // 4].min() > 0 and drawn[:, 40 // 4].max() == 0      # the vessel cancels against the reference
    assert vessels[:, 40 // 4].min() > 0 and vessels[:, 20 // 4].max() == 0  # the wire is not a vessel
    alone = along_weights(_planes(target))                                  # no auxiliary image
    assert alone[0, 0].abs().sum() == 0 and alone[0, 2].abs().sum() == 0


def test_pool_averages_each_structure_and_says_how_much_there_is():
    feats = torch.zeros(1, 2, 4, 4)
    feats[0, 0, :, 1] = 3.0
    feats[0, 1] = 1.0
    weights = torch.zeros(1, 2, 4, 4)
    weights[0, 0, :, 1] = 2.0                                               # a structure in column 1; none in the other
    out = along_pool(feats, weights).reshape(2, 3)
    assert torch.allclose(out[0, :2], torch.tensor([3.0, 1.0]), atol=1e-5)
    assert out[0, 2] > 0
    assert torch.equal(out[1], torch.zeros(3))


def test_path_returns_the_summary_and_the_same_tokens():
    path = PixelPath(dim=16, width=16, tophat=5, dense=3, along=True).eval()
    x = torch.randn(2, IN_CHANNELS, 2 * UNIT, 2 * UNIT)
    with torch.no_grad():
        tokens, fine, summary = path(x, dense=True, along=True)
        plain = path(x)
        _, none, again = path(x, along=True)
    assert summary.shape == (2, path.along_dim) and path.along_dim == len(ALONG) * (16 + 1 + 3)
    assert torch.equal(tokens, plain) and none is None and torch.equal(summary, again)
    with pytest.raises(ValueError, match="does not pool along"):
        PixelPath(dim=16, width=16, tophat=5)(x, along=True)
    with pytest.raises(ValueError, match="top-hat"):
        PixelPath(dim=16, width=16, along=True)


def test_settings_refuse_pooling_along_without_the_top_hat():
    with pytest.raises(ValueError, match="pixel_along needs"):
        MustSettings(pixel_along=True)
    with pytest.raises(ValueError, match="pixel_along needs"):
        CasIqaArguments(pixel_along=True)
    with pytest.raises(ValueError, match="pixel_along_own .* needs pixel_along"):
        MustSettings(pixel_tophat=5, pixel_along_own=True)
    with pytest.raises(ValueError, match="pixel_along_own .* needs pixel_along"):
        CasIqaArguments(pixel_tophat=5, pixel_along_own=True)


def test_every_metric_names_the_structures_its_head_reads():
    mask = along_mask(METRICS)
    assert set(ALONG_OF) == set(METRICS) and mask.shape == (len(METRICS), len(ALONG))
    wire, branches = METRICS.index("guidewire_visibility"), METRICS.index("branch_discernibility")
    assert mask[wire].tolist() == [1.0, 1.0, 0.0] and mask[branches].tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="sharpness"):
        along_mask(("sharpness",))


@pytest.mark.parametrize("own", [False, True])
def test_with_own_structures_the_branch_head_reads_nothing_of_the_devices(own):
    """What happens on the devices (features there, and how much of them there is) reaches the
    branch head only when the heads share every structure: with pixel_along_own neither the mask
    nor the normalisation lets it through, and the guidewire head still sees it."""
    settings = MustSettings(pixel_tophat=5, pixel_width=8, pixel_along=True, pixel_along_own=own)
    must = Must(settings, dim=16, patch_dim=16, metrics=METRICS, n_levels=5, n_paths=1).eval()
    target, live, reference = _scene()
    x = _planes(target, live, reference)
    torch.manual_seed(0)
    h = torch.randn(1, 8, 14, 14)
    moved = h.clone()
    moved[..., 20 // 4] += 5.0                       # another look along the wire's column; the vessel's untouched
    a, b = (must._head_extra(None, must.pixels._along(x, f, None)) for f in (h, moved))
    wire, branches = METRICS.index("guidewire_visibility"), METRICS.index("branch_discernibility")
    assert not torch.allclose(a[:, wire], b[:, wire])
    assert torch.allclose(a[:, branches], b[:, branches]) is own
