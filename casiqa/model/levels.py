"""Level distributions <-> scores (pure tensor functions, one definition for heads, losses and evals).

Expected score (Q-Align): s = sum_k p_k * v_k with level values v = 1..5.
Confidence: 1 - H(p) / log(L), 1 for a one-hot distribution, 0 for a uniform one.
Soft labels (DeQA-Score): the raters' opinion N(MOS, std^2) integrated over each level's bin
[v - 0.5, v + 0.5], end bins open, so a target keeps the panel's disagreement.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from casiqa.metrics import LEVELS, SCORE_MIN

LEVEL_VALUES = torch.arange(len(LEVELS), dtype=torch.float32) + SCORE_MIN  # [L] 1..5
MIN_STD = 0.25  # a panel's std of 0 would give a one-hot target; keep some spread (DeQA uses a floor too)


def expected_score(logits: torch.Tensor) -> torch.Tensor:
    """[..., L] logits -> [...] expected score on the 1..5 scale."""
    return (logits.float().softmax(-1) * LEVEL_VALUES.to(logits.device)).sum(-1)


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """[..., L] logits -> [...] 1 - normalised entropy."""
    logp = logits.float().log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return (1.0 - entropy / math.log(logits.shape[-1])).clamp(0.0, 1.0)


def soft_levels(mos: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[...] MOS and std -> [..., L] target distribution over levels."""
    mos, std = mos.float()[..., None], std.float().clamp_min(MIN_STD)[..., None]
    edges = LEVEL_VALUES.to(mos.device) + 0.5                     # upper edge of each bin
    cdf = 0.5 * (1 + torch.erf((edges - mos) / (std * math.sqrt(2.0))))
    cdf[..., -1] = 1.0                                            # last bin open above
    lower = torch.cat([torch.zeros_like(cdf[..., :1]), cdf[..., :-1]], dim=-1)  # first bin open below
    return (cdf - lower).clamp_min(0.0)


def evidence_loss(route_logits, targets: torch.Tensor) -> torch.Tensor | None:
    """Binary cross-entropy of the router's per-token, per-metric logits against failure-box
    maps targets [B, M, H, W] (1 inside a box of that metric's failures, 0 elsewhere, -1 ignore).
    None when MUST is off (no router)."""
    if route_logits is None or any(r is None for r in route_logits):
        return None
    losses = []
    for logits, target in zip(route_logits, targets.to(route_logits[0].device), strict=True):
        h, w, _ = logits.shape
        t = target[:, :h, :w].permute(1, 2, 0)                       # [h, w, M]
        valid = t >= 0
        if valid.any():
            losses.append(F.binary_cross_entropy_with_logits(logits.float()[valid], t[valid].float()))
    return torch.stack(losses).mean() if losses else None


def soft_label_loss(logits: torch.Tensor, target: torch.Tensor, metric_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of predicted level logits [B, M, L] against soft targets [B, M, L], mean.
    `metric_weights` [M] reweights the metrics (normalised to mean 1, so the loss scale stays)."""
    per = -(target * logits.float().log_softmax(-1)).sum(-1)     # [B, M]
    return metric_mean(per, metric_weights)


def metric_mean(per: torch.Tensor, metric_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of a per-sample, per-metric loss [B, M], the metrics weighted by `metric_weights` [M]
    normalised to mean 1 (so the loss keeps its scale)."""
    if metric_weights is None:
        return per.mean()
    w = metric_weights.to(per.device, per.dtype)
    return (per * (w / w.mean())).mean()
