"""Stage 1p: MUST's profile scorer (casiqa.model.profiles.ProfileScorer), trained on its own.

After stage 1 (finetune/warmup.py), from the same pixel cache: the profiles across each scored
metric's structure are sampled once per row (every auxiliary image given), then the scorer learns
the rows' soft level targets from them, each batch reading a random subset of every image's
points (so the set encoder sees many subsets of one image). Marked trained at the end: only then
does MUST average its level probabilities with the heads'. About 2.5 min on 2 CPU cores for the
phantom's two scored metrics and 25 epochs (README).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from casiqa.model.levels import expected_score, soft_label_loss
from casiqa.model.profiles import PROFILE_STRUCTURE, ProfileScorer
from finetune.warmup import PixelRows, _channels


@dataclass
class ProfileWarmupConfig:
    epochs: int = 25
    batch_size: int = 32
    learning_rate: float = 2.0e-3
    weight_decay: float = 0.01
    train_points: int = 128          # random points of each image's SCORER_POINTS per training batch
    seed: int = 0


def profile_rows(must, rows: PixelRows, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """PixelRows -> (profiles [N, S, n, C, L] float16, valid [N, S, n]) across the scored metrics'
    structures, every auxiliary image given, on the CPU."""
    scorer: ProfileScorer = must.profile_scorer
    rng = random.Random(0)
    out, valid = [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            idx = list(range(start, min(start + batch_size, len(rows))))
            p, v = scorer.profiles(must._derived(_channels(must, rows, idx, 0.0, rng)).float())
            out.append(p.half().cpu())
            valid.append(v.cpu())
    return torch.cat(out), torch.cat(valid)


def scorer_srcc(scorer: ProfileScorer, profiles: torch.Tensor, valid: torch.Tensor, mos: np.ndarray,
                batch_size: int = 64) -> dict[str, float]:
    """The scorer's validation SRCC per scored metric (its expected score against the MOS)."""
    from scipy.stats import spearmanr

    device = next(scorer.parameters()).device
    was = scorer.training
    scorer.eval()
    with torch.no_grad():
        scores = torch.cat([expected_score(scorer(profiles[i:i + batch_size].to(device).float(),
                                                  valid[i:i + batch_size].to(device))).cpu()
                            for i in range(0, len(profiles), batch_size)]).numpy()
    scorer.train(was)
    cols = [scorer.metrics.index(m) for m in scorer.scored]
    return {m: round(float(spearmanr(scores[:, j], mos[:, c])[0]), 4)
            for j, (m, c) in enumerate(zip(scorer.scored, cols, strict=True))}


def profile_warm_up(must, train: PixelRows, val: PixelRows | None, cfg: ProfileWarmupConfig, log=print,
                    progress=None) -> list[dict]:
    """Train must.profile_scorer on the rows' profiles; mark it trained; the per-epoch log."""
    scorer: ProfileScorer = must.profile_scorer
    if scorer is None:
        raise ValueError("this MUST has no profile scorer (profile_scores: true)")
    device = next(scorer.parameters()).device
    torch.manual_seed(cfg.seed)
    profiles, valid = profile_rows(must, train)
    shown = valid.any(dim=-1).float().mean(dim=0)                                    # [S] share of rows
    for m, share in zip(scorer.scored, shown.tolist(), strict=True):
        if share == 0:
            raise ValueError(f"no training row shows the structure {m} is scored from "
                             f"({PROFILE_STRUCTURE[m]}): the rows need their live frame and reference")
    checks = profile_rows(must, val) if val is not None else None
    cols = [scorer.metrics.index(m) for m in scorer.scored]
    levels = train.levels[:, cols].float()
    opt = torch.optim.AdamW(scorer.parameters(), cfg.learning_rate / 2, weight_decay=cfg.weight_decay)
    per_epoch = (len(profiles) + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=max(1, cfg.epochs * per_epoch))
    bar = progress(total=cfg.epochs * per_epoch, desc="profile scorer") if progress else None
    scorer.train()
    history = []
    n = profiles.shape[2]
    for epoch in range(cfg.epochs):
        losses = []
        order = torch.randperm(len(profiles))
        for i in range(0, len(profiles), cfg.batch_size):
            b = order[i:i + cfg.batch_size]
            k = torch.randperm(n)[:cfg.train_points]
            logits = scorer(profiles[b][:, :, k].to(device).float(), valid[b][:, :, k].to(device))
            loss = soft_label_loss(logits, levels[b].to(device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(scorer.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if bar:
                bar.update(1)
        entry = {"profile_epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4)}
        if checks is not None and ((epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs):
            entry.update({f"val_{m}_srcc": v for m, v in scorer_srcc(scorer, *checks, val.mos).items()})
        history.append(entry)
        log(entry)
    if bar:
        bar.close()
    scorer.trained.fill_(1.0)
    scorer.eval()
    return history
