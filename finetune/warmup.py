"""Pixel warm-up: MUST's pixel path, router, branches and heads learn the scores before SFT.

Run by `python -m finetune.sft` when the recipe sets `pixel_warmup_epochs` (the tiny recipe does).

A two-stage recipe, as LLaVA trains its projector before its language model: first the part of
MUST that judges quality learns from the pixels alone, then TRL's SFT trains everything on the
answer. Stage one needs neither the vision transformer nor the language model (the encoder's
gate into the quality stream is still closed, so the heads trained here are exactly the heads
of the full forward), so a sample costs ~10x less than in an SFT step on CPU (measured on 2
cores: ~0.75 s per batch of 32 against ~3.7 s per SFT step of 16) and it can see the training set
many times over. Each image goes through the model's own processor once; the cached grey images
are exactly the pixels the model sees later (the top-hat planes are cached with them).
Scores are invariant to the image's orientation, so this stage augments with the eight flips and
rotations (the SFT stage does not: its explanations name sides).

Losses: the soft-label loss of the heads (per-metric weights), the router's BCE against the
failure boxes (`evidence_weight`: which tokens hold a metric's failure) and, with the pixel
path's dense head, a BCE against dense damage maps (`dense_weight`, finetune.data.damage_maps:
the failure's severity on the wire or vessels it damaged, on a 4 px grid; `dense_damaged_weight`
weights the damaged cells against the background), with findings heads their loss against the
failure records (`findings_weight`, casiqa/model/findings.py) and, optionally, a squared error of
the expected score (`score_weight`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from casiqa.data.rows import grey_image
from casiqa.imaging import to_rgb
from casiqa.metrics import METRICS
from casiqa.model.findings import finding_targets, findings_loss, worst_kind_accuracy
from casiqa.model.levels import evidence_loss, expected_score, metric_mean, soft_label_loss, soft_levels
from casiqa.model.pixel import ROLES, UNIT, align, dihedral, images_from_patches
from casiqa.stats import agreement
from finetune.data import box_map, damage_maps, failure_list


@dataclass
class PixelRows:
    """Rows as the pixel path sees them: grey images at the processor's size, targets, boxes."""

    target: list[torch.Tensor]                   # [H, W] float16, normalised as the processor does
    aux: list[dict[str, torch.Tensor]]           # role -> [H, W] float16, aligned to the target
    levels: torch.Tensor                         # [N, M, L] soft level targets
    mos: np.ndarray                              # [N, M]
    boxes: list[torch.Tensor | None]             # [M, h, w] failure-box maps on the token grid, or None
    damage: list[torch.Tensor | None] | None = None  # [M, H/4, W/4] dense damage maps (float16), or None
    tophat: list[torch.Tensor] | None = None     # [K, H, W] derived planes (top-hat of target, live, reference,
                                                 # then any device comparison) with every aux image (float16)
    failures: list[list[dict] | None] | None = None  # each row's failure records (None: none recorded), for
                                                 # reports by failure kind; caches made before lack them

    def __len__(self) -> int:
        return len(self.target)


def grey_inputs(processor, images: list[np.ndarray]) -> list[torch.Tensor]:
    """Grey images [H, W] in [0, 1] -> the processor's resized, normalised grey pixels."""
    ip = processor.image_processor
    enc = ip(images=[to_rgb(g) for g in images], return_tensors="pt")
    return images_from_patches(enc["pixel_values"], enc["image_grid_thw"], ip.patch_size, ip.merge_size,
                               ip.temporal_patch_size)


def fine_derived_planes(pixels, processor, target: np.ndarray, aux: dict[str, np.ndarray], shape: tuple[int, int],
                        tophat: int) -> torch.Tensor:
    """The pixel path's derived planes ([D, H, W] for the model's grid `shape`) computed from the
    grey target and auxiliary images (role -> image) as `processor` makes them at a finer size,
    with a top-hat window of `tophat` px there, and max-pooled onto `shape`: a wire a pixel wide at
    the finer size keeps its full contrast, where the model's own pixels have averaged it with its
    background. For stage-1 probes (benchmarks.bench_warmup --fine_tophat_px): the model itself
    cannot compute such planes at inference, from its own processed pixels."""
    roles = list(aux)
    greys = grey_inputs(processor, [target] + [aux[r] for r in roles])
    fine = greys[0]
    aux = {r: align(g, tuple(fine.shape)) for r, g in zip(roles, greys[1:], strict=True)}
    with torch.no_grad():
        planes = pixels.channels(fine, aux)[None]
        derived = pixels.derived_planes(planes.to(next(pixels.parameters()).dtype), tophat)
    return F.adaptive_max_pool2d(derived.float(), shape)[0]


def pixel_rows(rows, processor, use_aux: bool = True, progress=lambda it, desc: it, dense: bool = False,
               pixels=None, fine: tuple | None = None, tophat_px: int = 0) -> PixelRows:
    """The rows' pixels as the model's processor makes them; with `dense`, also each row's dense
    damage maps on the pixel path's H/4 grid (finetune.data.damage_maps); given the model's pixel
    path with top-hat planes, its derived planes too (PixelPath.derived_planes: computed once here,
    not in every epoch), or with `fine` = (a processor of a finer size, a top-hat window in px
    there), those planes from the finer images (fine_derived_planes; a stage-1 probe); `tophat_px`: the
    top-hat window in px when `processor` makes another size than the model's (0: the path's own)."""
    target, aux, boxes, mos, std, damage, tophat, failures = [], [], [], [], [], [], [], []
    for row in progress(rows, "pixel cache"):
        roles = [r for r in ROLES if use_aux and row.get(r) is not None]
        source = grey_image(row["synthetic"])
        sources = {r: grey_image(row[r]) for r in roles}
        greys = grey_inputs(processor, [source] + [sources[r] for r in roles])
        t = greys[0]
        target.append(t.half())
        aux.append({r: align(g, tuple(t.shape)).half() for r, g in zip(roles, greys[1:], strict=True)})
        if pixels is not None and pixels.tophat and fine is not None:
            tophat.append(fine_derived_planes(pixels, fine[0], source, sources, tuple(t.shape), fine[1]).cpu().half())
        elif pixels is not None and pixels.tophat:
            with torch.no_grad():
                planes = pixels.channels(t, {r: a.float() for r, a in aux[-1].items()})[None]
                planes = planes.to(next(pixels.parameters()).dtype)
                tophat.append(pixels.derived_planes(planes, tophat_px)[0].cpu().half())
        failures.append(failure_list(row))
        boxes.append(box_map(failures[-1], (t.shape[0] // UNIT, t.shape[1] // UNIT)))
        if dense:
            d = damage_maps(row, (t.shape[0] // 4, t.shape[1] // 4), target_shape=source.shape)
            damage.append(None if d is None else d.half())
        mos.append([float(row["scores"][m]["mos"]) for m in METRICS])
        std.append([float(row["scores"][m].get("std") or 0.0) for m in METRICS])
    mos_t = torch.tensor(mos)
    return PixelRows(target, aux, soft_levels(mos_t, torch.tensor(std)), mos_t.numpy(), boxes,
                     damage if dense else None, tophat or None, failures)


@dataclass
class WarmupConfig:
    epochs: float = 12.0
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    aux_drop: float = 0.3
    evidence_weight: float = 0.0
    dense_weight: float = 0.0                         # BCE of the dense damage maps (needs pixel_dense)
    score_weight: float = 0.0                         # squared error of the expected score against the MOS
    findings_weight: float = 1.0                      # the findings heads' loss (models with findings)
    dense_damaged_weight: float = 1.0                 # in that BCE, cells on damaged structure count this much more
    metric_weights: tuple[float, ...] | None = None   # per metric (METRICS order) in the score loss
    augment: bool = True
    bf16: bool = False                                # bf16 autocast of the forward pass (losses in fp32)
    seed: int = 0


def score_loss(logits: torch.Tensor, mos: torch.Tensor, metric_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error of the expected score (levels' values 1..5) against the MOS [B, M], averaged
    with the per-metric weights normalised to mean 1: what the soft-label loss does not say
    directly is how far off the score is, and SRCC ranks by that score."""
    return metric_mean((expected_score(logits) - mos.to(torch.float32)) ** 2, metric_weights)


def dense_loss(logits: torch.Tensor, maps: torch.Tensor, damaged_weight: float = 1.0) -> torch.Tensor:
    """BCE of the dense damage logits against the damage maps [B, M, h, w], the cells on damaged
    structure (map > 0) weighted `damaged_weight` times the rest: a wire covers ~3 % of the cells,
    so with even weights the background's loss drowns the wire's."""
    cell = 1.0 + (damaged_weight - 1.0) * (maps > 0).to(torch.float32)
    return F.binary_cross_entropy_with_logits(logits.float(), maps, weight=cell)


def _batches(data: PixelRows, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of rows whose targets have one size."""
    by_size: dict[tuple, list[int]] = {}
    for i, t in enumerate(data.target):
        by_size.setdefault(tuple(t.shape), []).append(i)
    out = []
    for idx in by_size.values():
        rng.shuffle(idx)
        out += [idx[k : k + batch_size] for k in range(0, len(idx), batch_size)]
    rng.shuffle(out)
    return out


def _channels(must, data: PixelRows, idx: list[int], drop: float, rng: random.Random) -> torch.Tensor:
    """The batch's planes [B, C, H, W], each auxiliary image dropped with chance `drop`."""
    kept = [{r for r in data.aux[i] if rng.random() >= drop} for i in idx]
    target = torch.stack([data.target[i] for i in idx]).float()
    present = {r: torch.tensor([float(r in k) for k in kept]) for r in ROLES}
    aux = {r: torch.stack([data.aux[i][r] if r in k else data.target[i].new_zeros(data.target[i].shape)
                           for i, k in zip(idx, kept, strict=True)]).float() for r in ROLES}
    x = must.pixels.batch_channels(target, aux, present)
    if data.tophat is not None and must.pixels.tophat:
        # the cached derived planes, those that need a dropped image zeroed as forward would
        keep = torch.stack([must.pixels.derived_keep(*(r in k for r in ROLES)) for k in kept])[:, :, None, None]
        x = torch.cat([x, torch.stack([data.tophat[i] for i in idx]).float() * keep], dim=1)
    p = next(must.pixels.parameters())
    return x.to(p.device, p.dtype)


def predict(must, data: PixelRows, batch_size: int = 64, findings: bool = False):
    """Expected scores [N, M] of the pixel path with every auxiliary image given (and with
    `findings`, the finding logits [N, K, 2], or None for a model without findings heads)."""
    was = must.training
    must.eval()
    out = np.zeros((len(data), len(METRICS)), np.float32)
    found = torch.zeros(len(data), len(must.vocab), 2) if must.vocab else None
    rng = random.Random(0)
    with torch.no_grad():
        for idx in _batches(data, batch_size, rng):
            logits, _, f = must.score_pixels(_channels(must, data, idx, 0.0, rng), findings=True)
            out[idx] = expected_score(logits).cpu().numpy()
            if found is not None:
                found[idx] = f.float().cpu()
    must.train(was)
    return (out, found) if findings else out


def row_finding_targets(data: PixelRows, vocab: list[tuple[str, str]]) -> torch.Tensor | None:
    """[N, K, 2] findings targets of the rows (-1 for rows without failure records), or None
    without a vocabulary or records (a cache made before they were kept)."""
    if not vocab or data.failures is None:
        return None
    return torch.stack([finding_targets(f, vocab, f"row {i}") for i, f in enumerate(data.failures)])


def predict_maps(must, data: PixelRows, batch_size: int = 64) -> np.ndarray:
    """Dense damage maps [N, M, H/4, W/4] (probabilities) of the pixel path's dense head, every
    auxiliary image given; rows of one size (as one data set's rows are)."""
    if must.pixels.dense is None:
        raise ValueError("this pixel path has no dense head (MustSettings.pixel_dense)")
    was = must.training
    must.eval()
    out: list = [None] * len(data)
    rng = random.Random(0)
    with torch.no_grad():
        for idx in _batches(data, batch_size, rng):
            _, _, fine = must.score_pixels(_channels(must, data, idx, 0.0, rng), dense=True)
            for i, f in zip(idx, torch.sigmoid(fine.float()).cpu().numpy(), strict=True):
                out[i] = f
    must.train(was)
    return np.stack(out)


def srcc_of(pred: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    return {m: round(agreement(pred[:, j], mos[:, j])["srcc"], 4) for j, m in enumerate(METRICS)}


def warm_up(model, train: PixelRows, val: PixelRows | None, cfg: WarmupConfig, log=print, progress=None) -> list[dict]:
    """Train MUST's quality path on the cached pixels; returns the per-epoch log."""
    must = model.model.must if hasattr(model, "model") else model.must
    if getattr(must, "pixels", None) is None:
        raise ValueError("the pixel warm-up needs MUST with its pixel path (must: true, pixel_path: true)")
    if torch.cuda.is_available():
        must.to("cuda")  # the trainer moves the rest of the model later
    device = next(must.parameters()).device
    params = [p for n, p in must.named_parameters() if not n.startswith(("depth.", "images."))]
    opt = torch.optim.AdamW(params, cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    per_epoch = len(_batches(train, cfg.batch_size, random.Random(0)))
    total = max(1, math.ceil(cfg.epochs * per_epoch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=total, pct_start=0.15)
    weights = None if cfg.metric_weights is None else torch.tensor(cfg.metric_weights, dtype=torch.float32)
    dense = bool(cfg.dense_weight)
    found = row_finding_targets(train, must.vocab) if cfg.findings_weight else None
    if must.vocab and cfg.findings_weight and found is None:
        raise ValueError("the findings heads learn from the rows' failure records, which these rows lack")
    val_found = row_finding_targets(val, must.vocab) if val is not None else None
    if dense and (must.pixels.dense is None or train.damage is None):
        raise ValueError("dense_weight needs MUST's dense head (pixel_dense: true) and rows cached with dense maps")
    must.train()
    history, step = [], 0
    bar = progress(total=total, desc="pixel warm-up") if progress else None
    while step < total:
        losses = []
        for idx in _batches(train, cfg.batch_size, rng):
            if step >= total:
                break
            x = _channels(must, train, idx, cfg.aux_drop, rng)
            boxes = [train.boxes[i] for i in idx]
            k, flip = rng.randrange(4), rng.random() < 0.5
            if cfg.augment:
                x = dihedral(x, k, flip)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                if dense:
                    logits, route, fine, predicted = must.score_pixels(x, dense=True, findings=True)
                else:
                    logits, route, predicted = must.score_pixels(x, findings=True)
            logits, route = logits.float(), [None if r is None else r.float() for r in route]
            loss = soft_label_loss(logits, train.levels[idx].to(device), weights)
            if found is not None:
                # the kinds do not change with a flip or rotation; the words naming sides are not asked for
                fl = findings_loss(predicted, found[idx].to(device))
                loss = loss + cfg.findings_weight * fl if fl is not None else loss
            if cfg.score_weight:
                loss = loss + cfg.score_weight * score_loss(logits, torch.from_numpy(train.mos[idx]).to(device), weights)
            maps = [train.damage[i] for i in idx] if dense else []
            if dense and all(m is not None for m in maps):
                maps = torch.stack(maps).to(device, torch.float32)
                maps = dihedral(maps, k, flip) if cfg.augment else maps
                loss = loss + cfg.dense_weight * dense_loss(fine, maps, cfg.dense_damaged_weight)
            if cfg.evidence_weight and all(b is not None for b in boxes):
                maps = torch.stack(boxes).to(device)
                maps = dihedral(maps, k, flip) if cfg.augment else maps
                h, w = maps.shape[-2:]
                ev = evidence_loss([r.reshape(h, w, -1) for r in route], maps)
                loss = loss + cfg.evidence_weight * ev
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
        entry = {"step": step, "epoch": round(step / per_epoch, 2), "loss": round(float(np.mean(losses)), 4)}
        if val is not None:
            scores, predicted = predict(must, val, findings=True)
            entry.update({f"val_{m}_srcc": v for m, v in srcc_of(scores, val.mos).items()})
            if predicted is not None and val_found is not None:
                entry.update({f"val_{k}": v for k, v in
                              worst_kind_accuracy(predicted, val_found, must.vocab, METRICS).items()})
        history.append(entry)
        log(entry)
    if bar:
        bar.close()
    return history
