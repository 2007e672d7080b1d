"""Background anatomy as an attenuation map (line integral of mu, dimensionless).

Structures of a cardiac frontal/oblique projection: soft-tissue baseline, the heart shadow,
lung fields (less attenuating), the spine with vertebral bodies, ribs with cortical rims, the
diaphragm dome, and a 1/f^beta soft-tissue texture (beta ~ 3 matches the radial power
spectra measured on real angiograms; see casiqa.phantom.calibrate).
"""

from __future__ import annotations

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def power_law_texture(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Zero-mean unit-std random field with radial power spectrum ~ f^-beta."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.rfftfreq(size), indexing="ij"))
    amp = np.where(f > 0, np.maximum(f, 1.0 / size) ** (-beta / 2), 0.0)
    spec = amp * (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape))
    field = np.fft.irfft2(spec, s=(size, size))
    return (field / field.std()).astype(np.float32)


def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """[size, size] float32 attenuation map of the thorax behind the coronaries."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # normalised, y down
    a = np.full((size, size), rng.uniform(2.2, 2.8), np.float32)
    a += rng.normal(0, 0.25) * (xx - 0.5) + rng.normal(0, 0.25) * (yy - 0.5)  # soft gradients

    # Heart shadow: a large soft ellipse, denser than the lungs.
    cx, cy = rng.uniform(0.4, 0.65), rng.uniform(0.5, 0.7)
    rx, ry = rng.uniform(0.3, 0.45), rng.uniform(0.28, 0.4)
    ang = rng.uniform(-0.6, 0.6)
    u = ((xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)) / rx
    v = (-(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)) / ry
    a += rng.uniform(0.25, 0.55) * _sigmoid((1.0 - np.hypot(u, v)) * rng.uniform(6, 14))

    # Lung field on one side: air lowers attenuation.
    side = rng.choice([-1.0, 1.0])
    edge = 0.5 + side * rng.uniform(0.15, 0.35)
    a -= rng.uniform(0.2, 0.5) * _sigmoid(side * (xx - edge) * rng.uniform(10, 25)) * _sigmoid((0.8 - yy) * 8)

    # Spine: a vertical band with vertebral bodies and disc spaces (period ~ 25 mm ~ 85 px).
    if rng.random() < 0.8:
        sx, sw = rng.uniform(0.1, 0.9), rng.uniform(0.12, 0.2)
        tilt = rng.uniform(-0.15, 0.15)
        d = (xx - sx - tilt * (yy - 0.5)) / (sw / 2)
        band = _sigmoid((1.0 - np.abs(d)) * 8)
        period = rng.uniform(0.14, 0.2)
        bodies = 0.6 + 0.4 * _sigmoid(np.cos(2 * np.pi * (yy / period + rng.random())) * 6)
        a += rng.uniform(0.25, 0.5) * band * bodies

    # Ribs: curved bands with denser cortical rims.
    for _ in range(int(rng.integers(2, 6))):
        y0, curv, tilt = rng.uniform(-0.1, 1.0), rng.uniform(0.3, 1.2), rng.uniform(-0.4, 0.4)
        centre = y0 + tilt * (xx - 0.5) + curv * (xx - rng.uniform(0.2, 0.8)) ** 2
        width = rng.uniform(0.025, 0.045)
        dist = np.abs(yy - centre) / width
        a += rng.uniform(0.03, 0.08) * (_sigmoid((1 - dist) * 10) + 0.8 * np.exp(-(((dist - 1) / 0.15) ** 2)))

    # Diaphragm dome: dense abdomen below a parabolic edge.
    if rng.random() < 0.6:
        dx, dy, dc = rng.uniform(0.2, 0.8), rng.uniform(0.65, 0.95), rng.uniform(0.5, 2.0)
        edge = dy + dc * (xx - dx) ** 2
        a += rng.uniform(0.4, 0.9) * _sigmoid((yy - edge) * size / rng.uniform(3, 8))

    a += rng.uniform(0.12, 0.24) * power_law_texture(rng, size, beta=rng.uniform(3.0, 3.6))
    return a.astype(np.float32)
