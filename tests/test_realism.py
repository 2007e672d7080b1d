"""The calibration statistics measure what they claim, on images with known answers."""

import numpy as np
import pytest

from casiqa.phantom.realism import field_of_view, image_statistics, noise_sigma, spectrum_slope, vessel_widths


def test_noise_estimate_recovers_gaussian_sigma():
    rng = np.random.default_rng(0)
    img = 0.5 + rng.normal(0, 0.01, (200, 200))
    assert noise_sigma(img, np.ones_like(img, bool)) == pytest.approx(0.01, rel=0.05)


def test_widths_of_a_drawn_bar():
    mask = np.zeros((100, 100), bool)
    mask[40:47, 10:90] = True  # 7 px wide
    assert np.median(vessel_widths(mask)) == pytest.approx(7, abs=0.6)


def test_field_of_view_of_a_disc():
    yy, xx = np.mgrid[0:200, 0:200]
    img = np.where(np.hypot(xx - 100, yy - 100) < 80, 0.5, 0.03)
    # the threshold sits near the dark level, so the edge lands ~1.5 px outside the disc
    assert field_of_view(img).mean() == pytest.approx(np.pi * 81.5**2 / 200**2, rel=0.02)


def test_spectrum_slope_of_a_power_law_field():
    from casiqa.phantom.background import power_law_texture

    field = power_law_texture(np.random.default_rng(1), 256, beta=3.0)
    assert spectrum_slope(0.5 + 0.05 * field, np.ones((256, 256), bool)) == pytest.approx(-3.0, abs=0.35)


def test_contrast_of_a_dark_bar():
    img = np.full((120, 120), 0.6)
    mask = np.zeros_like(img, bool)
    mask[50:58, 10:110] = True
    img[mask] = 0.45
    stats = image_statistics(img, mask)
    assert stats["vessel_contrast"] == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ValueError, match="differ in shape"):
        image_statistics(img, mask[:10])
