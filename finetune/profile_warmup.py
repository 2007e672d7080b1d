"""Stage 1p: MUST's profile scorer (casiqa.model.profiles.ProfileScorer), trained on its own.

After stage 1 (finetune/warmup.py), from the same pixel cache: the profiles across each scored
metric's structure are sampled once per row (every auxiliary image given), then the scorer learns
the rows' soft level targets, their MOS or both from them (`loss`), each batch reading a random
subset of every image's points (so the set encoder sees many subsets of one image). With
`point_weight`, each point's feature also learns, through a linear probe kept only for this
stage, the damage at its place: the row's dense damage map (finetune.data.damage_maps: the
failure's severity on the structure it damaged, inside its box) read at the point, as a soft
BCE target. The image's label says how bad; the points' labels say where, so the per-point
features learn what a damaged stretch of wire or vessel looks like from 256 labelled points per
image (on the phantom, a third of them on damage) instead of one score. Marked trained at the
end: only then does MUST mix its level probabilities with the heads', by the share
`fit_shares` then fits on the validation rows. About 5 min on 2 CPU cores for the phantom's two
scored metrics and the recipe's 20 epochs (README).
With `mixup`, each training row is mixed with another of its batch (its point sets or its pooled
features, and its targets by the same share): off in the recipe, since its validation gain did not
reach the test split (training log, twentieth session).
With `views` > 1, the profiles are also sampled from turned and flipped copies of each row
(casiqa.model.pixel.DIHEDRAL, the views MUST averages the scorer over at inference), and each
training batch reads every row in one of them at random: other points along the same structures
and the profiles mirrored, at the cost of sampling them `views` times and holding them in memory.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

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
    loss: str = "levels"             # levels: soft labels (MOS, std); mos: smooth L1 of the expected score;
                                     # both: their sum (PROFILE_LOSSES)
    point_weight: float = 0.0        # BCE of each point's damage (its row's dense damage map there), this much
    bf16: bool = False               # bf16 autocast of the forward pass (losses in fp32)
    mixup: float = 0.0               # > 0: each training row mixed with another of its batch, by a share drawn
                                     # from Beta(mixup, mixup), and its targets as much (MIXUPS); 0: off
    mixup_of: str = "points"         # points: the two rows' point sets; features: their pooled features
    mixup_metrics: tuple[str, ...] = ()  # the scored metrics mixed (the others' rows and targets stay); (): all
    views: int = 1                   # the first this many of DIHEDRAL's views sampled per training row
    seed: int = 0

    def __post_init__(self) -> None:
        check_loss(self.loss)
        check_mixup(self.mixup, self.mixup_of, self.mixup_metrics)
        check_views(self.views)


def profile_config(args, seed: int) -> ProfileWarmupConfig:
    """Stage 1p's settings from the training arguments (finetune.config.CasIqaArguments' profile_*
    fields), as finetune.sft and benchmarks.bench_profiles both run it."""
    return ProfileWarmupConfig(
        epochs=args.profile_epochs, loss=args.profile_loss, point_weight=args.profile_point_weight,
        bf16=args.profile_bf16, train_points=args.profile_train_points, weight_decay=args.profile_weight_decay,
        mixup=args.profile_mixup, mixup_of=args.profile_mixup_of, mixup_metrics=tuple(args.profile_mixup_metrics),
        views=args.profile_views, seed=seed)


def check_views(views: int) -> None:
    from casiqa.model.pixel import DIHEDRAL

    if not 1 <= views <= len(DIHEDRAL):
        raise ValueError(f"profile views must be 1..{len(DIHEDRAL)} (the image's flips and quarter turns), not {views}")


# what stage 1p's mixup mixes: `points`, a row's points with another's (the share of points taken from
# each is the share of its targets: a tree with half its points from a pruned one is half as pruned);
# `features`, the two rows' pooled features (manifold mixup)
MIXUPS = ("points", "features")


PROFILE_LOSSES = ("levels", "mos", "both")


def check_mixup(mixup: float, of: str, metrics) -> None:
    """Refuse a stage-1p mixup that cannot run: a negative concentration, an unknown MIXUPS mode, a
    metric not scored from profiles (PROFILE_STRUCTURE); the training arguments check it too."""
    if mixup < 0:
        raise ValueError(f"profile mixup must be >= 0 (0: off), not {mixup}")
    if of not in MIXUPS:
        raise ValueError(f"profile mixup_of {of!r} is not one of {list(MIXUPS)}")
    unknown = [m for m in metrics if m not in PROFILE_STRUCTURE]
    if unknown:
        raise ValueError(f"profile mixup metric(s) {unknown} are not scored from profiles ({list(PROFILE_STRUCTURE)})")


def check_loss(loss: str) -> None:
    """Refuse a stage-1p loss that is not one of PROFILE_LOSSES (the training arguments check it too,
    before stage 1 runs)."""
    if loss not in PROFILE_LOSSES:
        raise ValueError(f"profile loss {loss!r} is not one of {list(PROFILE_LOSSES)}")


def scorer_loss(logits: torch.Tensor, levels: torch.Tensor, mos: torch.Tensor, loss: str) -> torch.Tensor:
    """Stage 1p's loss of level logits [B, S, L] against soft level targets [B, S, L] and MOS [B, S]:
    the soft-label loss, the smooth L1 of the expected score against the MOS (a rank-shaped target:
    the levels' boundaries do not cut it into five), or both."""
    out = logits.new_zeros(())
    if loss in ("levels", "both"):
        out = out + soft_label_loss(logits, levels)
    if loss in ("mos", "both"):
        out = out + F.smooth_l1_loss(expected_score(logits), mos)
    return out


def profile_rows(must, rows: PixelRows, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """PixelRows -> (profiles [N, S, n, C, L] float16, valid [N, S, n]) across the scored metrics'
    structures, every auxiliary image given, on the CPU."""
    profiles, valid, _ = profile_rows_at(must, rows, batch_size)
    return profiles, valid


def profile_rows_at(must, rows: PixelRows, batch_size: int = 64,
                    view: tuple[int, bool] = (0, False)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`profile_rows` and the points the profiles were sampled at ([N, S, n, 2] (y, x) px of the
    cached images, float16); with `view` (k, flip), of the images turned k quarter turns and then
    flipped (casiqa.model.pixel.dihedral), the points in the turned images' frame."""
    from casiqa.model.pixel import dihedral

    scorer: ProfileScorer = must.profile_scorer
    rng = random.Random(0)
    out, valid, points = [], [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            idx = list(range(start, min(start + batch_size, len(rows))))
            planes = must._derived(_channels(must, rows, idx, 0.0, rng)).float()
            p, v, at = scorer.profiles_at(dihedral(planes, *view))
            out.append(p.half().cpu())
            valid.append(v.cpu())
            points.append(at.half().cpu())
    return torch.cat(out), torch.cat(valid), torch.cat(points)


def view_damage(damage: list[torch.Tensor | None], views, points: torch.Tensor, size: tuple[int, int],
                cols: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`point_damage` for the points [V, N, S, n, 2] of each view (k, flip) in `views` (`stacked_views`),
    each view's points reading its rows' maps turned as its images were -> (labels [V, N, S, n], known [N])."""
    from casiqa.model.pixel import dihedral

    labels, known = [], None
    for (k, flip), at in zip(views, points, strict=True):
        turned = [None if d is None else dihedral(d, k, flip) for d in damage]
        got, known = point_damage(turned, at, size[::-1] if k % 2 else size, cols)
        labels.append(got)
    return torch.stack(labels), known


def stacked_views(must, rows: PixelRows, views) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`profile_rows_at` of each view (k, flip) in `views`, stacked: [V, N, S, n, ...] each, filled
    in place (the profiles of the phantom's training rows take ~0.7 GB a view)."""
    out = None
    for i, view in enumerate(views):
        got = profile_rows_at(must, rows, view=view)
        if out is None:
            out = tuple(t.new_empty((len(views), *t.shape)) for t in got)
        for whole, part in zip(out, got, strict=True):
            whole[i] = part
        del got
    return out


def point_damage(damage: list[torch.Tensor | None], points: torch.Tensor, size: tuple[int, int],
                 cols: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows' dense damage maps ([M, h, w] each, or None for a row without failure records), the
    points [N, S, n, 2] (y, x px) of images `size` (H, W) and the map of each structure S (its
    metric's index `cols`) -> (the map's value at each point [N, S, n], known [N]: the row has a map).
    The maps lie on a coarser grid than the images (H/4): a point reads the cell it falls in."""
    labels = torch.zeros(points.shape[:3])
    known = torch.tensor([d is not None for d in damage], dtype=torch.bool)
    for i, d in enumerate(damage):
        if d is None:
            continue
        h, w = d.shape[-2:]
        y = (points[i, ..., 0].float() * h / size[0]).long().clamp(0, h - 1)             # [S, n]
        x = (points[i, ..., 1].float() * w / size[1]).long().clamp(0, w - 1)
        for j, c in enumerate(cols):
            labels[i, j] = d[c].float()[y[j], x[j]]
    return labels, known


def scorer_scores(scorer: ProfileScorer, profiles: torch.Tensor, valid: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """The scorer's expected scores [N, scored] of cached profiles (profile_rows), in eval mode."""
    device = next(scorer.parameters()).device
    was = scorer.training
    scorer.eval()
    with torch.no_grad():
        scores = torch.cat([expected_score(scorer(profiles[i:i + batch_size].to(device).float(),
                                                  valid[i:i + batch_size].to(device))).cpu()
                            for i in range(0, len(profiles), batch_size)]).numpy()
    scorer.train(was)
    return scores


def scorer_srcc(scorer: ProfileScorer, profiles: torch.Tensor, valid: torch.Tensor, mos: np.ndarray,
                batch_size: int = 64) -> dict[str, float]:
    """The scorer's validation SRCC per scored metric (its expected score against the MOS)."""
    scores = scorer_scores(scorer, profiles, valid, batch_size)
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
    from casiqa.model.pixel import DIHEDRAL

    views = DIHEDRAL[:cfg.views]
    profiles, valid, points = stacked_views(must, train, views)                      # [V, N, S, n, ...]
    shown = valid[0].any(dim=-1).float().mean(dim=0)                                 # [S] share of rows
    for m, share in zip(scorer.scored, shown.tolist(), strict=True):
        if share == 0:
            raise ValueError(f"no training row shows the structure {m} is scored from "
                             f"({PROFILE_STRUCTURE[m]}): the rows need their live frame and reference")
    checks = profile_rows(must, val) if val is not None else None
    cols = [scorer.metrics.index(m) for m in scorer.scored]
    levels = train.levels[:, cols].float()
    mos = torch.as_tensor(train.mos[:, cols]).float()
    params = list(scorer.parameters())
    if cfg.point_weight:
        if train.damage is None or not any(d is not None for d in train.damage):
            raise ValueError("the point loss (profile point weight) reads the rows' dense damage maps, and these "
                             "rows have none: they need failure records and structure masks, cached with "
                             "the dense maps (pixel_dense, pixel_warmup_dense_weight > 0)")
        labels, known = view_damage(train.damage, views, points, tuple(train.target[0].shape), cols)
        # one linear probe per scored metric: a point's feature -> the damage there; for this stage only
        probes = torch.nn.ModuleList(torch.nn.Linear(scorer.hidden, 1) for _ in scorer.scored).to(device)
        params += list(probes.parameters())
    unknown = [m for m in cfg.mixup_metrics if m not in scorer.scored]
    if unknown:
        raise ValueError(f"profile mixup metric(s) {unknown} are not scored from profiles ({list(scorer.scored)})")
    mixed = torch.tensor([not cfg.mixup_metrics or m in cfg.mixup_metrics for m in scorer.scored])   # [S]
    opt = torch.optim.AdamW(params, cfg.learning_rate / 2, weight_decay=cfg.weight_decay)
    rows = profiles.shape[1]
    per_epoch = (rows + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=max(1, cfg.epochs * per_epoch))
    bar = progress(total=cfg.epochs * per_epoch, desc="profile scorer") if progress else None
    scorer.train()
    history = []
    n = profiles.shape[3]
    for epoch in range(cfg.epochs):
        losses, point_losses = [], []
        order = torch.randperm(rows)
        for i in range(0, rows, cfg.batch_size):
            b = order[i:i + cfg.batch_size]
            k = torch.randperm(n)[:cfg.train_points]
            # each row's view (one view draws nothing, so the random stream stays as it was without views)
            v = torch.randint(len(views), (len(b),)) if len(views) > 1 else torch.zeros(len(b), dtype=torch.long)
            shown = valid[v, b][:, :, k]
            x = profiles[v, b][:, :, k].float()
            lv, ms = levels[b], mos[b]
            if cfg.point_weight:
                at, knew = labels[v, b][:, :, k], known[b][:, None, None].expand_as(shown)
            if cfg.mixup:
                lam, other = mix_draw(len(b), cfg.mixup, cfg.mixup_of, len(k))
                share = torch.where(mixed, lam[:, None], 1.0)                             # [B, S] own share
                if cfg.mixup_of == "points":
                    x, shown = mix_points(x, share, other), mix_points(shown, share, other)
                    if cfg.point_weight:
                        at, knew = mix_points(at, share, other), mix_points(knew, share, other)
                lv = share[..., None] * lv + (1 - share[..., None]) * lv[other]
                ms = share * ms + (1 - share) * ms[other]
            shown = shown.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                pooled, features = scorer.encode(x.to(device), shown)
                if cfg.mixup and cfg.mixup_of == "features":
                    w = share.to(device)[..., None]
                    pooled = w * pooled + (1 - w) * pooled[other.to(device)]
                logits = scorer.score(pooled)
                if cfg.point_weight:
                    z = torch.stack([probe(features[:, j]).squeeze(-1) for j, probe in enumerate(probes)], dim=1)
            loss = scorer_loss(logits.float(), lv.to(device), ms.to(device), cfg.loss)
            if cfg.point_weight:
                mask = (shown & knew.to(device)).float()                                    # [B, S, n']
                bce = F.binary_cross_entropy_with_logits(z.float(), at.to(device), reduction="none")
                point_loss = (bce * mask).sum() / mask.sum().clamp(min=1.0)
                loss = loss + cfg.point_weight * point_loss
                point_losses.append(point_loss.item())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if bar:
                bar.update(1)
        entry = {"profile_epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4)}
        if point_losses:
            entry["point_loss"] = round(float(np.mean(point_losses)), 4)
        if checks is not None and ((epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs):
            entry.update({f"val_{m}_srcc": v for m, v in scorer_srcc(scorer, *checks, val.mos).items()})
        history.append(entry)
        log(entry)
    if bar:
        bar.close()
    scorer.trained.fill_(1.0)
    scorer.eval()
    return history


def mix_draw(rows: int, alpha: float, of: str, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's mixup: (each row's own share [rows], drawn from Beta(alpha, alpha) and for `points`
    rounded to a whole number of its `points`; the row it is mixed with [rows], a permutation)."""
    lam = torch.distributions.Beta(alpha, alpha).sample((rows,))
    if of == "points":
        lam = (lam * points).round() / points
    return lam, torch.randperm(rows)


def mix_points(x: torch.Tensor, share: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per-point values x [B, S, n, ...] of a batch and each row's own share [B, S] -> per structure,
    row i's first round(share * n) points its own, the rest row other[i]'s at the same places (the
    points of a batch are a random subset, so the first ones are any)."""
    n = x.shape[2]
    own = torch.arange(n) < (share * n).round()[..., None]                             # [B, S, n]
    own = own.reshape(*own.shape, *([1] * (x.dim() - 3)))
    return torch.where(own, x, x[other])


SHARE_GRID = tuple(round(0.05 * i, 2) for i in range(21))


def fit_shares(must, val: PixelRows) -> dict[str, dict[str, float]]:
    """Set the trained scorer's share of each scored metric's mixture with its head (ProfileScorer.
    share) to the one of SHARE_GRID whose mixed expected score ranks the validation rows' MOS best
    (the nearest to an even mixture among equals). The mixture's expected score is the shares'
    mixture of the two expected scores, so one pass of each suffices. Returns per metric the share
    and the validation SRCC of the head alone, the scorer alone and the mixture."""
    from casiqa.metrics import METRICS
    from finetune.warmup import predict

    scorer: ProfileScorer = must.profile_scorer
    trained = scorer.trained.clone()
    scorer.trained.zero_()                                                         # the heads alone
    heads = predict(must, val)
    scorer.trained.copy_(trained)
    profiles, valid = profile_rows(must, val)
    own = scorer_scores(scorer, profiles, valid)
    shown = valid.any(dim=-1).numpy()
    out = {}
    for j, m in enumerate(scorer.scored):
        col = METRICS.index(m)
        h, p, t = heads[:, col], own[:, j], val.mos[:, col]

        def rho(w: float, h=h, p=p, t=t, j=j) -> float:
            mixed = np.where(shown[:, j], w * p + (1 - w) * h, h)
            return float(spearmanr(mixed, t)[0]) if np.ptp(mixed) > 0 and np.ptp(t) > 0 else float("nan")

        # a constant MOS or score ranks nothing: every share ties, and the even mixture stays
        best = max(SHARE_GRID, key=lambda w: (round(np.nan_to_num(rho(w), nan=-2.0), 4), -abs(w - 0.5)))
        scorer.share[j] = best
        out[m] = {"share": best, "heads_srcc": round(rho(0.0), 4), "scorer_srcc": round(rho(1.0), 4),
                  "mixed_srcc": round(rho(best), 4)}
    return out
