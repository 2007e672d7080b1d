"""IQA agreement statistics (pure functions over arrays), computed the standard way.

SRCC and KRCC are rank correlations (scipy). PLCC and RMSE are computed after mapping the
predictions through the 4-parameter logistic of VQEG (2000) / ITU-T P.1401:
    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2
fitted by least squares, as IQA papers (and DeQA-Score's cal_plcc_srcc) report them.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    z = np.clip(-(x - b3) / (np.abs(b4) + 1e-12), -50.0, 50.0)  # exp overflows past ~700; the curve is flat there
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Least-squares parameters of logistic4 mapping predictions onto the truth's scale."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    p0 = [truth.max(), truth.min(), float(np.median(pred)), max(float(np.std(pred)), 1e-3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        try:
            params, _ = optimize.curve_fit(logistic4, pred, truth, p0=p0, maxfev=20000)
        except RuntimeError:  # no convergence: fall back to the identity-like start
            params = np.array(p0)
    return params


def srcc(pred, truth) -> float:
    return float(stats.spearmanr(pred, truth).statistic)


def krcc(pred, truth) -> float:
    return float(stats.kendalltau(pred, truth).statistic)


MIN_FIT_POINTS = 5  # the logistic has 4 parameters: fewer points cannot constrain it


def _mapped(pred: np.ndarray, truth: np.ndarray, fit: bool) -> np.ndarray:
    if not fit or pred.size < MIN_FIT_POINTS:
        return pred
    return logistic4(pred, *fit_logistic(pred, truth))


def plcc(pred, truth, fit: bool = True) -> float:
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    mapped = _mapped(pred, truth, fit)
    return float(stats.pearsonr(mapped, truth).statistic)


def rmse(pred, truth, fit: bool = True) -> float:
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    mapped = _mapped(pred, truth, fit)
    return float(np.sqrt(np.mean((mapped - truth) ** 2)))


def agreement(pred, truth) -> dict[str, float]:
    """SRCC, KRCC, PLCC and RMSE (both after the logistic fit) of one metric."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if pred.shape != truth.shape or pred.size < 3:
        raise ValueError(f"need matching arrays of at least 3 values, got {pred.shape} and {truth.shape}")
    if np.ptp(pred) == 0 or np.ptp(truth) == 0:
        return {"srcc": float("nan"), "krcc": float("nan"), "plcc": float("nan"), "rmse": float(np.std(truth))}
    return {"srcc": srcc(pred, truth), "krcc": krcc(pred, truth), "plcc": plcc(pred, truth), "rmse": rmse(pred, truth)}
