"""MUST: Multi-path featUre fuSion and rouTing, between the vision encoder and the language model.

For each sample (one target image, zero to two auxiliary images, aligned to it):
  1. depth fusion   every image's final visual tokens gain, through learned per-token gates,
                    projections of shallower encoder depths (fine texture: noise, grids, thin wires);
  2. image fusion   target tokens gain, per aligned position, features of [target, aux, target - aux]
                    for each auxiliary role, and (optionally) cross-attention to all aux tokens;
                    the pixel path (casiqa/model/pixel.py) adds, per position, a conv stem's view
                    of the target and target - aux pixels, where thin failures are still visible;
  3. routing        each target token is weighted over the metric branches (softmax or top-k);
                    router and heads read the quality stream: pixel path + tanh(gate) * target
                    tokens (the gate starts closed, so a pixel-only warm-up trains the same heads);
  4. branches       each metric branch adapts the tokens (metric-aware tokens) and an attention pool,
                    biased by the routing weights (optionally joined by the routed mean, which counts
                    how much is damaged), feeds that metric's head: logits over five levels; the
                    pixel path can add its damage maps' summary and its features along the true
                    devices and vessels (pixel_dense, pixel_along) to every head; with `findings`,
                    each branch also says which failure kinds of its metric it sees and how badly
                    (casiqa/model/findings.py), for the prompt the explanation is written from.
The LM receives, at the same positions, the target tokens plus their routed branch adaptations, and
the depth-fused auxiliary tokens: the visual token count never changes. Every residual branch
starts at zero, so an untrained MUST passes the encoder's tokens through unchanged.

With `dihedral_scores`, inference scores each sample eight times, once per flip and rotation of
the pixel path's input (its tokens turned back onto the image's grid), and averages the heads'
level probabilities: a score that does not change when the image is flipped or rotated (exactly
so while the encoder's gate is closed; an open gate adds the encoder's tokens of the image as
given to every view). Routing and the LM's tokens come from the image as given.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from casiqa.model.config import MustSettings
from casiqa.model.findings import vocabulary
from casiqa.model.pixel import (
    ALONG,
    DIHEDRAL,
    IN_CHANNELS,
    UNIT,
    PixelPath,
    align,
    along_mask,
    dihedral,
    undo_dihedral,
    undo_dihedral_map,
)
from casiqa.model.profiles import ProfileScorer


def zero_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    layer._zero_init = True  # honoured by CasIqaPreTrainedModel._init_weights
    return layer


def mlp(d_in: int, d_hidden: int, d_out: int, zero_out: bool = False) -> nn.Sequential:
    out = zero_linear(d_hidden, d_out) if zero_out else nn.Linear(d_hidden, d_out)
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), out)


@dataclass
class MustResult:
    tokens: list[torch.Tensor]          # per image [N_i, D], to scatter into the LM's image positions
    level_logits: torch.Tensor          # [B, M, L] per sample, metric, level
    routing: list[torch.Tensor | None]  # per sample [h, w, M] routing weights of the target grid (None: MUST off)
    route_logits: list[torch.Tensor | None]  # per sample [h, w, M] router logits (trained as evidence detectors)
    finding_logits: torch.Tensor | None = None  # [B, K, 2] per failure kind (Must.vocab): presence, severity
    damage: list[torch.Tensor | None] | None = None  # per sample [M, H/4, W/4] the pixel path's damage map (0..1),
                                                # at inference with a dense head (`Must.damage_maps`); else None


class DepthFusion(nn.Module):
    """final + sum_d sigmoid(gate_d(final)) * proj_d(merged patch features of depth d)."""

    def __init__(self, n_paths: int, patch_dim: int, dim: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(patch_dim) for _ in range(n_paths))
        self.projs = nn.ModuleList(mlp(patch_dim, dim, dim, zero_out=True) for _ in range(n_paths))
        self.gates = nn.ModuleList(nn.Linear(dim, 1) for _ in range(n_paths))

    def forward(self, final: torch.Tensor, paths: list[torch.Tensor]) -> torch.Tensor:
        out = final  # [N, D]
        for norm, proj, gate, x in zip(self.norms, self.projs, self.gates, paths, strict=True):
            out = out + torch.sigmoid(gate(final)) * proj(norm(x))  # x: [N, 4C]
        return out


class ImageFusion(nn.Module):
    """Target tokens informed by aligned auxiliary tokens (and optionally cross-attention)."""

    def __init__(self, dim: int, roles: tuple[str, ...], heads: int, cross_attention: bool):
        super().__init__()
        self.roles = roles
        self.aligned = nn.ModuleDict({r: mlp(3 * dim, dim, dim, zero_out=True) for r in roles})
        self.norm = nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True) if cross_attention else None
        self.role_embed = nn.ParameterDict({r: nn.Parameter(torch.zeros(dim)) for r in roles})
        self.cross_gate = nn.Parameter(torch.zeros(1))  # tanh(0) = 0: starts closed (Flamingo-style)

    def forward(self, target: torch.Tensor, grid: tuple[int, int], aux: list[tuple[str, torch.Tensor, tuple[int, int]]]):
        if not aux:
            return target
        out = target  # [N, D]
        t = self.norm(target)
        for role, tokens, aux_grid in aux:
            a = self.norm(_regrid(tokens, aux_grid, grid))  # aligned to the target's token grid
            out = out + self.aligned[role](torch.cat([t, a, t - a], dim=-1))
        if self.cross is not None:
            kv = torch.cat([self.norm(tok) + self.role_embed[role] for role, tok, _ in aux], dim=0)[None]  # [1, M, D]
            attended, _ = self.cross(t[None], kv, kv, need_weights=False)
            out = out + torch.tanh(self.cross_gate) * attended[0]
        return out


def _regrid(tokens: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Tokens on an (h, w) grid resampled to another grid (same aspect ratio, other resolution)."""
    if src == dst:
        return tokens
    x = tokens.T.reshape(1, -1, *src)  # [1, D, h, w]
    return F.interpolate(x, size=dst, mode="bilinear", align_corners=False)[0].reshape(tokens.shape[1], -1).T


class Router(nn.Module):
    def __init__(self, dim: int, n_metrics: int, settings: MustSettings):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, n_metrics)
        self.mode, self.top_k, self.temperature = settings.router, settings.top_k, settings.temperature

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(routing weights [N, M], raw logits [N, M]); the logits double as per-metric evidence
        detectors when the trainer supervises them with failure boxes."""
        raw = self.proj(self.norm(tokens))
        logits = raw / self.temperature
        if self.mode == "topk" and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return logits.softmax(dim=-1), raw


class MetricBranch(nn.Module):
    """Metric-aware tokens (adapter) pooled into the level head.

    pool "attention": a routing-biased attention pool, a weighted *average* of the tokens, so it
    says what the worst place looks like but not how many places there are (one missing branch
    and four look alike). "attention+mass" adds the routing-weighted mean of the tokens, which
    grows with the share of the image routed to the metric: how much is missing or broken.
    """

    def __init__(self, dim: int, hidden: int, n_levels: int, pool: str = "attention", extra: int = 0,
                 kinds: int = 0):
        super().__init__()
        self.pool = pool
        self.adapter = mlp(dim, hidden, dim, zero_out=True)
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)
        d_in = dim * (2 if pool == "attention+mass" else 1) + extra   # extra: Must._head_extra
        self.head = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, n_levels))
        # per failure kind of this metric: present? how severe? (logits; casiqa/model/findings.py), read
        # from the level head's hidden layer: what it saw, named
        self.findings = nn.Linear(hidden, 2 * kinds) if kinds else None

    def forward(self, tokens: torch.Tensor, route: torch.Tensor,
                extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """tokens [..., N, D], route [..., N] (its routing weights), extra [..., E] -> level logits
        [..., L], the adaptation [..., N, D] and the finding logits [..., K, 2] (None without a
        findings head); leading dimensions are samples of one grid."""
        delta = self.adapter(tokens)                                   # [..., N, D]
        branch = tokens + delta
        attn = (self.score(self.norm(branch))[..., 0] + torch.log(route.clamp_min(1e-6))).softmax(dim=-1)  # [..., N]
        pooled = (attn[..., None] * branch).sum(dim=-2)                # [..., D]
        if self.pool == "attention+mass":
            pooled = torch.cat([pooled, (route[..., None] * branch).mean(dim=-2)], dim=-1)  # [..., 2D]
        if extra is not None:
            pooled = torch.cat([pooled, extra.to(pooled.dtype)], dim=-1)
        hidden = self.head[:-1](pooled)
        findings = None if self.findings is None else self.findings(hidden).unflatten(-1, (-1, 2))
        return self.head[-1](hidden), delta, findings


DAMAGE_STATS = 2  # per metric: mean and max of the predicted damage map


def damage_summary(fine: torch.Tensor) -> torch.Tensor:
    """Dense damage logits [B, M, h, w] -> [B, M, 2]: how much of the image is damaged (mean) and
    how badly the worst place is (max), each in [0, 1]."""
    p = torch.sigmoid(fine.float())
    return torch.stack([p.mean(dim=(-2, -1)), p.amax(dim=(-2, -1))], dim=-1)


class Must(nn.Module):
    def __init__(self, settings: MustSettings, dim: int, patch_dim: int, metrics: tuple[str, ...], n_levels: int,
                 n_paths: int):
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self.vocab = vocabulary(settings.findings, metrics) if settings.enabled else []  # (metric, kind) per finding
        if settings.findings and not settings.enabled:
            raise ValueError("findings are reported by MUST's metric branches: they need must: true")
        if settings.enabled:
            self.depth = DepthFusion(n_paths, patch_dim, dim)
            self.images = ImageFusion(dim, ("live", "reference"), settings.heads, settings.cross_attention)
            self.pixels = (PixelPath(dim, settings.pixel_width, patch=settings.pixel_patch, tophat=settings.pixel_tophat,
                                     dense=len(metrics) if settings.pixel_dense else 0,
                                     compare=tuple(settings.pixel_compare), pool=settings.pixel_pool,
                                     along=settings.pixel_along, along_own=settings.pixel_along_own,
                                     tophat_margin=settings.pixel_tophat_margin, profiles=settings.pixel_profiles)
                           if settings.pixel_path else None)
            # some metrics also scored from the profiles across their structures, mixed with their heads
            self.profile_scorer = (ProfileScorer(metrics, n_levels, half_px=settings.profile_half_px,
                                                 samples=settings.profile_samples, along=settings.profile_along,
                                                 centre=settings.profile_centre_lines)
                                   if settings.profile_scores else None)
            self.vit_gate = nn.Parameter(torch.zeros(1))  # encoder tokens into the quality stream: tanh(0) = 0
            self.router = Router(dim, len(metrics), settings)
            extra = DAMAGE_STATS if settings.pixel_dense and settings.dense_to_heads else 0
            extra += self.pixels.along_dim if self.pixels is not None else 0
            self.branches = nn.ModuleList(MetricBranch(dim, settings.hidden, n_levels, settings.pool, extra,
                                                       kinds=len(settings.findings.get(m, [])))
                                          for m in metrics)
        else:  # ablation: a plain VLM, one head per metric on mean-pooled target tokens
            self.pooled_heads = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, settings.hidden), nn.GELU(), nn.Linear(settings.hidden, n_levels))
                for _ in metrics
            )

    def forward(self, final: list[torch.Tensor], paths: list[list[torch.Tensor]], grids: list[tuple[int, int]],
                roles: list[str], samples: list[int], batch_size: int,
                pixels: list[torch.Tensor] | None = None) -> MustResult:
        """final[i]: [N_i, D] encoder output of image i; paths[i]: its merged shallower features
        ([N_i, 4C] each); grids[i]: its token grid (h, w); roles[i] and samples[i]: its role and sample;
        pixels[i]: its grey image [h * 28, w * 28] (needed when the pixel path is on)."""
        targets = _targets(roles, samples, batch_size)
        if not self.settings.enabled:
            logits = torch.stack([torch.stack([h(final[t].mean(dim=0)) for h in self.pooled_heads]) for t in targets])
            return MustResult(list(final), logits, [None] * batch_size, [None] * batch_size)
        fused = [self.depth(f, p) for f, p in zip(final, paths, strict=True)]
        pixel_tokens, extra, planes, damage = (self._pixel_tokens(pixels, roles, samples, targets)
                                               if self.pixels is not None else (None, None, None, None))
        tokens = list(fused)
        logits, routing, raw_logits, findings = [], [], [], []
        for b, t in enumerate(targets):
            aux = [(roles[i], fused[i], grids[i]) for i in range(len(roles)) if samples[i] == b and i != t]
            x = self.images(fused[t], grids[t], aux)                  # the target's visual tokens for the LM
            # the quality stream the router and heads read: the pixel path, joined by the encoder's
            # tokens through a gate that starts closed (a pixel-path warm-up leaves the heads as trained)
            q = x if pixel_tokens is None else pixel_tokens[b] + torch.tanh(self.vit_gate) * x
            level_logits, route, raw, deltas, found = self.score(q, None if extra is None else extra[b])
            if q.dim() == 3:  # views [V, N, D]: their mean level probabilities; routing from the image as given
                level_logits = view_mean(level_logits)
                found = None if found is None else found.mean(dim=0)
                route, raw, deltas = route[0], raw[0], deltas[0]
            if self.profile_scorer is not None:
                level_logits = self.profile_scorer.mix(level_logits[None], self._derived(planes[b][None]),
                                                       views=q.dim() == 3)[0]
            findings.append(found)
            tokens[t] = x + (route[:, :, None] * deltas).sum(dim=1)   # routed metric-aware tokens
            logits.append(level_logits)
            routing.append(route.reshape(*grids[t], -1))
            raw_logits.append(raw.reshape(*grids[t], -1))
        return MustResult(tokens, torch.stack(logits), routing, raw_logits,
                          None if findings[0] is None else torch.stack(findings), damage)

    @contextmanager
    def one_view(self):
        """Within: the image as given only, whatever `dihedral_scores` says. For passes that do not
        read the level logits (generating the answer): the views change nothing else, so they would
        cost eight pixel-path passes for nothing."""
        saved = self.settings
        self.settings = replace(saved, dihedral_scores=False)
        try:
            yield self
        finally:
            self.settings = saved

    @property
    def feeds_damage(self) -> bool:
        return bool(self.settings.pixel_dense and self.settings.dense_to_heads and self.pixels is not None)

    @property
    def feeds_along(self) -> bool:
        return bool(self.pixels is not None and self.pixels.along_dim)

    def _head_extra(self, fine: torch.Tensor | None, along: torch.Tensor | None) -> torch.Tensor | None:
        """What the pixel path adds to every metric head beside the tokens -> [B, M, E] or None: the
        damage maps' summary (its own metric's) and the summary along the structures (every
        structure's, or with pixel_along_own its own metric's, the others zero)."""
        parts = [damage_summary(fine)] if self.feeds_damage else []
        if along is not None:
            per = along.float().unflatten(1, (len(ALONG), -1))[:, None]               # [B, 1, S, F]
            # the mask is made here, not in __init__: a model built on the meta device holds no values
            if self.settings.pixel_along_own:
                per = per * along_mask(self.metrics).to(per.device)[None, :, :, None]   # [B, M, S, F]
            parts.append(per.expand(-1, len(self.metrics), -1, -1).flatten(2))      # [B, M, S * F]
        return torch.cat(parts, dim=-1) if parts else None

    def score(self, q: torch.Tensor, extra: torch.Tensor | None = None):
        """Quality tokens [..., N, D] (and what the pixel path adds to each head beside them,
        [..., M, E]: `_head_extra`) -> level logits [..., M, L], routing [..., N, M], router logits [..., N, M]
        each branch's metric-aware adaptation [..., N, M, D] and the finding logits [..., K, 2] (the
        branches' in `vocab` order; None without findings). Leading dimensions are samples of one
        token grid, scored together."""
        route, raw = self.router(q)
        per_metric, deltas, findings = [], [], []
        for m, branch in enumerate(self.branches):
            level_logits, delta, found = branch(q, route[..., m], None if extra is None else extra[..., m, :])
            per_metric.append(level_logits)
            deltas.append(delta)
            if found is not None:
                findings.append(found)
        return (torch.stack(per_metric, dim=-2), route, raw, torch.stack(deltas, dim=-2),
                torch.cat(findings, dim=-2) if findings else None)

    def score_pixels(self, channels: torch.Tensor, dense: bool = False, findings: bool = False):
        """The pixel path alone (no encoder, no LM): channels [B, C, H, W] (PixelPath.channels) ->
        level logits [B, M, L] and router logits [B, N, M] (and with `dense`, the damage-map
        logits [B, M, H/4, W/4]; then with `findings`, the finding logits [B, K, 2] or None). What
        the pixel warm-up trains; equal to the full forward's while the encoder gate is closed. The
        batch is scored in one call (its samples share a grid)."""
        feats, fine, along = self._pixel_run(channels, dense)
        logits, _, route, _, found = self.score(feats, self._head_extra(fine, along))
        if self.profile_scorer is not None:
            logits = self.profile_scorer.mix(logits, self._derived(channels))
        out = (logits, route, fine) if dense else (logits, route)
        return (*out, found) if findings else out

    def _pixel_tokens(self, pixels: list[torch.Tensor] | None, roles: list[str], samples: list[int],
                      targets: list[int]):
        """Per sample [N, D] pixel-path features of its target grid, what they add to the heads
        [M, E] (`_head_extra`; None when nothing does), its planes [C, H, W] (PixelPath.channels,
        which the profile scorer reads too) and its damage maps [M, H/4, W/4] (`damage_maps`; None
        when not made); targets of one size share a batch. With `dihedral_scores` at inference, per
        sample [V, N, D] and [V, M, E]: one per view (DIHEDRAL), the tokens in the given image's
        order, and the views' mean damage maps, each turned back onto the given image."""
        if pixels is None:
            raise ValueError("MUST's pixel path needs the images' pixels")
        stacks = []
        for b, t in enumerate(targets):
            size = tuple(pixels[t].shape)
            aux = {roles[i]: align(pixels[i], size) for i in range(len(roles)) if samples[i] == b and i != t}
            stacks.append(self.pixels.channels(pixels[t], aux))
        out: list[torch.Tensor | None] = [None] * len(targets)
        extra: list[torch.Tensor | None] | None = [None] * len(targets) if self.feeds_damage or self.feeds_along else None
        damage: list[torch.Tensor | None] = [None] * len(targets)
        views = self.settings.dihedral_scores and not self.training
        for size in dict.fromkeys(tuple(x.shape) for x in stacks):  # first-seen order: deterministic batches
            idx = [b for b, x in enumerate(stacks) if tuple(x.shape) == size]
            batch = torch.stack([stacks[b] for b in idx])
            feats, summary, maps = self._pixel_views(batch) if views else self._pixel_batch(batch)
            for j, b in enumerate(idx):
                out[b] = feats[j]
                if extra is not None:
                    extra[b] = summary[j]
                if maps is not None:
                    damage[b] = maps[j]
        return out, extra, stacks, damage

    def _derived(self, x: torch.Tensor) -> torch.Tensor:
        """Planes [B, C, H, W] of PixelPath.channels, with its derived planes added if not given."""
        return x if x.shape[1] != IN_CHANNELS else torch.cat([x, self.pixels.derived_planes(x)], dim=1)

    def _pixel_run(self, channels: torch.Tensor, dense: bool = False):
        """The pixel path on planes [B, C, H, W] -> (tokens, damage logits or None, summary along the
        structures or None), computing the maps and the summary only where asked for or fed to heads."""
        if self.feeds_along:
            return self.pixels(channels, dense=dense or self.feeds_damage, along=True)
        if dense or self.feeds_damage:
            return (*self.pixels(channels, dense=True), None)
        return self.pixels(channels), None, None

    @property
    def damage_maps(self) -> bool:
        """Whether a pass makes the pixel path's damage maps for the caller (the evidence boxes): at
        inference, when the pixel path has a dense head. Training passes do not need them."""
        return bool(self.pixels is not None and self.pixels.dense is not None and not self.training)

    def _pixel_batch(self, batch: torch.Tensor):
        """Planes [B, C, H, W] -> pixel tokens [B, N, D], what they add to the heads [B, M, E]
        (damage-map summary, summary along the structures; None when neither feeds them) and the
        damage maps [B, M, H/4, W/4] in 0..1 (None unless `damage_maps`)."""
        maps = self.damage_maps
        feats, fine, along = self._pixel_run(batch, dense=maps)
        extra = self._head_extra(fine, along)
        return (feats, None if extra is None else extra.to(feats.dtype),
                torch.sigmoid(fine.float()) if maps and fine is not None else None)

    def _pixel_views(self, batch: torch.Tensor):
        """`_pixel_batch` of every view of the batch (DIHEDRAL) -> [B, V, N, D] tokens in the given
        image's order, [B, V, M, E], and the views' damage maps turned back onto the given image and
        averaged [B, M, H/4, W/4] (or None): a map that turns with the image, as the scores do not
        change with it. Views of one shape (all eight for a square image, else the even and the odd
        quarter turns) run as one batch."""
        n = batch.shape[0]
        feats: list = [None] * len(DIHEDRAL)
        summary: list = [None] * len(DIHEDRAL)
        maps: list = [None] * len(DIHEDRAL)
        h, w = batch.shape[-2:]
        shape = {v: (h, w) if k % 2 == 0 else (w, h) for v, (k, _) in enumerate(DIHEDRAL)}  # odd turns swap H, W
        for hw in dict.fromkeys(shape.values()):
            group = [v for v in shape if shape[v] == hw]
            f, d, p = self._pixel_batch(torch.cat([dihedral(batch, *DIHEDRAL[v]) for v in group]))
            for j, v in enumerate(group):
                feats[v] = undo_dihedral(f[j * n:(j + 1) * n], (hw[0] // UNIT, hw[1] // UNIT), *DIHEDRAL[v])
                summary[v] = None if d is None else d[j * n:(j + 1) * n]
                maps[v] = None if p is None else undo_dihedral_map(p[j * n:(j + 1) * n], *DIHEDRAL[v])
        return (torch.stack(feats, dim=1), None if summary[0] is None else torch.stack(summary, dim=1),
                None if maps[0] is None else torch.stack(maps).mean(dim=0))


def view_mean(logits: torch.Tensor) -> torch.Tensor:
    """Level logits of views [V, ..., L] -> the log of their mean level probabilities [..., L] (logits
    of the averaged distribution)."""
    return torch.logsumexp(logits.float().log_softmax(dim=-1), dim=0).to(logits.dtype) - math.log(logits.shape[0])


def _targets(roles: list[str], samples: list[int], batch_size: int) -> list[int]:
    """Index of the single target image of each sample."""
    out = []
    for b in range(batch_size):
        idx = [i for i, (r, s) in enumerate(zip(roles, samples, strict=True)) if s == b and r == "target"]
        if len(idx) != 1:
            raise ValueError(f"sample {b} has {len(idx)} target images; each sample needs exactly one")
        out.append(idx[0])
    return out
