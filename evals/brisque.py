"""BRISQUE features (Mittal, Moorthy & Bovik, IEEE TIP 2012), computed here in numpy/scipy.

36 natural-scene statistics per image: a generalised Gaussian fit to the MSCN coefficients and
asymmetric generalised Gaussian fits to their four pairwise products, at two scales. The
original maps them to a score with an SVR trained on LIVE; here, as for any NR-IQA baseline
without shipped weights, the mapping to each metric is fitted on the train split (evals.baselines).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, special

_GAMMAS = np.arange(0.2, 10.0, 0.001)
_R_GGD = special.gamma(2 / _GAMMAS) ** 2 / (special.gamma(1 / _GAMMAS) * special.gamma(3 / _GAMMAS))


def mscn(image: np.ndarray, sigma: float = 7 / 6) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a grey image in [0, 255]."""
    mu = ndimage.gaussian_filter(image, sigma, truncate=3.0)
    var = ndimage.gaussian_filter(image * image, sigma, truncate=3.0) - mu * mu
    return (image - mu) / (np.sqrt(np.abs(var)) + 1.0)


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """Shape and variance of a zero-mean generalised Gaussian (moment matching)."""
    sigma_sq = float(np.mean(x * x))
    e = float(np.mean(np.abs(x))) ** 2
    rho = sigma_sq / max(e, 1e-12)
    shape = float(_GAMMAS[np.argmin((1.0 / _R_GGD - rho) ** 2)]) if np.isfinite(rho) else 2.0
    return shape, sigma_sq


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Shape, mean, left and right variance of an asymmetric generalised Gaussian."""
    left, right = x[x < 0], x[x >= 0]
    sl = np.sqrt(np.mean(left * left)) if left.size else 1e-6
    sr = np.sqrt(np.mean(right * right)) if right.size else 1e-6
    gamma_hat = sl / max(sr, 1e-12)
    r_hat = np.mean(np.abs(x)) ** 2 / max(np.mean(x * x), 1e-12)
    big_r = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    shape = float(_GAMMAS[np.argmin((_R_GGD - big_r) ** 2)])
    const = np.sqrt(special.gamma(1 / shape) / special.gamma(3 / shape))
    mean = (sr - sl) * (special.gamma(2 / shape) / special.gamma(1 / shape)) * const
    return shape, float(mean), float(sl * sl), float(sr * sr)


def brisque_features(grey: np.ndarray) -> np.ndarray:
    """36 features of a grey image in [0, 1]."""
    image = np.asarray(grey, np.float64) * 255.0
    feats: list[float] = []
    for _ in range(2):
        m = mscn(image)
        feats.extend(ggd_fit(m))
        for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
            product = m * np.roll(m, shift, axis=(0, 1))
            shape, mean, lv, rv = aggd_fit(product)
            feats.extend([shape, mean, lv, rv])
        image = image[::2, ::2] if min(image.shape) >= 16 else image  # half scale (the paper uses bicubic)
    return np.asarray(feats, np.float64)
