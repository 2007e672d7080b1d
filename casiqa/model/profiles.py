"""Profiles across the true structures: how the target looks across its wire and vessels, point by point.

The pixel path's stem sees a guidewire (under a pixel wide at 224 px) through 3 x 3 filters and
pools it onto 28 px tokens, or averages its features along the whole structure (`pixel_along`).
Every guidewire failure, though, is a change of one thing: the dark dip the wire makes across
its width, compared with the live frame's. A fade makes it shallower, a gap removes it, blur
widens it, a displacement moves it off the true line, a ghost adds a second dip beside it. The
same holds for vessels against the reference. So this module samples, at points spread along each
structure of `pixel.ALONG` (the live frame's devices, the target's own devices, the true vessels),
the images across the structure: perpendicular to it (the structure tensor's dominant gradient),
at sub-pixel steps, +-PROFILE_HALF_PX around the point, and optionally (`along`) as far along it
through the same point, where a gap, a cut or a fade's onset shows. With `centre`, the vessels'
points lie on their centre lines (`centre_lines`), spread by length rather than by area. A small
set encoder reads each point's profile (flip-invariant: the normal's sign is arbitrary) and pools
the points (mean, max, min); stage 1p can also teach its per-point features where the damage is
(finetune/profile_warmup.py, `point_weight`).

Two uses: `ProfileScorer` (MustSettings.profile_scores, in the tiny recipe) scores guidewire
visibility and branch discernibility from them on its own, its level probabilities mixed with
the metric heads' (its share fitted on the validation rows); `PixelPath(profiles=N)`
(pixel_profiles, off) appends one such vector per structure to the summary the heads read, which
did not help (the heads did not learn to use it).
Measured (training log, 2026-11-27 seventh session): the profiles alone rank the phantom's
validation guidewire MOS at 0.82-0.85 where the stage-1 heads reach 0.78; the shipped model's test
SRCC for the guidewire rose from 0.77 to 0.84 with the scorer. Along as well as across (2026-11-28),
the scorer alone ranks validation branches 0.022-0.030 higher over three seeds (0.79-0.81); with
the point loss and the vessels' centre lines (2026-11-28, tenth session) 0.817-0.836 over two, and
the shipped model's test SRCC for branches rose from 0.812 to 0.828.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PROFILE_HALF_PX = 7.0       # px either side of the structure, at 224 px (the displacement's reach is ~12 px)
PROFILE_SAMPLES = 33        # samples across, ~0.44 px apart
PROFILE_POINTS = 64         # points per structure and image
# which planes of PixelPath.channels (+ its top-hat planes) are sampled: target, live, reference,
# target - reference, target - live, top-hat of target, top-hat of reference
PROFILE_PLANES = (0, 1, 4, 5, 2, 8, 10)
# per structure of pixel.ALONG: (quantile, share of it) above which a pixel is on the structure,
# and whether points are spread by strength (devices) or evenly (vessels: the thin distal ones count)
STRUCTURE_THRESHOLD = {"live devices": (0.995, 0.5), "target devices": (0.995, 0.5), "true vessels": (0.99, 0.25)}


QUANTILE_STRIDE = 5         # the structure's threshold is a quantile of every 5th pixel
NORMAL_WINDOW = 4           # px either side: the structure tensor is summed over a 9 x 9 window around a point


def point_normals(weight: torch.Tensor, points: torch.Tensor, r: int = NORMAL_WINDOW) -> torch.Tensor:
    """[B, S, H, W] structure weights and points [B, S, N, 2] (y, x px) -> unit normals [B, S, N, 2]
    (y, x) across the structure at each point: the dominant gradient direction of the structure
    tensor, summed with Gaussian weights over a (2r + 1)^2 window (computed at the points only)."""
    b, s, h, w = weight.shape
    d = torch.arange(-r - 1, r + 2, device=weight.device)
    ys = (points[..., 0].long()[..., None, None] + d[:, None]).clamp(0, h - 1)          # [B, S, N, K, 1]
    xs = (points[..., 1].long()[..., None, None] + d[None, :]).clamp(0, w - 1)          # [B, S, N, 1, K]
    flat = weight.reshape(b, s, h * w)
    patch = torch.gather(flat, 2, (ys * w + xs).flatten(2)).reshape(*points.shape[:3], len(d), len(d))
    gy = (patch[..., 2:, 1:-1] - patch[..., :-2, 1:-1]) / 2
    gx = (patch[..., 1:-1, 2:] - patch[..., 1:-1, :-2]) / 2
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=weight.device, dtype=weight.dtype) / (r / 2)) ** 2)
    g = g[:, None] * g[None, :]
    jxx, jyy, jxy = ((v * g).sum(dim=(-2, -1)) for v in (gx * gx, gy * gy, gx * gy))
    angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)


def centre_lines(weight: torch.Tensor) -> torch.Tensor:
    """[B, S, H, W] structure weights -> bool [B, S, H, W]: ridge pixels, where the weight (smoothed
    by a 3 x 3 binomial) curves down across the structure more than it curves along it (the Hessian's most
    negative eigenvalue dominates), and peaks across it (not below either neighbour in the
    eigenvector's direction, taken as the nearest of the four through the pixel). A line one or
    two pixels wide along the middle of each wire or vessel, whatever its calibre; a flank, where
    the weight falls off, is not on it."""
    b, s, h, w = weight.shape
    kernel = torch.tensor([1.0, 2.0, 1.0], device=weight.device) / 4
    kernel = (kernel[:, None] * kernel[None, :])[None, None]        # binomial: a 1 px line keeps its peak
    x = F.conv2d(F.pad(weight.reshape(b * s, 1, h, w).float(), (1, 1, 1, 1), mode="replicate"), kernel)
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    c = p[..., 1:-1, 1:-1]
    dxx = p[..., 1:-1, 2:] + p[..., 1:-1, :-2] - 2 * c
    dyy = p[..., 2:, 1:-1] + p[..., :-2, 1:-1] - 2 * c
    dxy = (p[..., 2:, 2:] + p[..., :-2, :-2] - p[..., 2:, :-2] - p[..., :-2, 2:]) / 4
    mean, spread = (dxx + dyy) / 2, torch.sqrt(((dxx - dyy) / 2) ** 2 + dxy ** 2)
    low, high = mean - spread, mean + spread                                       # the Hessian's eigenvalues
    across = 0.5 * torch.atan2(2 * dxy, dxx - dyy) + math.pi / 2                   # the low one's eigenvector (x right, y down)
    k = torch.round(across / (math.pi / 4)).long() % 4                             # 0: x, 1: x = y, 2: y, 3: x = -y
    pairs = [(p[..., 1:-1, 2:], p[..., 1:-1, :-2]), (p[..., 2:, 2:], p[..., :-2, :-2]),
             (p[..., 2:, 1:-1], p[..., :-2, 1:-1]), (p[..., :-2, 2:], p[..., 2:, :-2])]
    peak = torch.stack([(c >= u) & (c >= v) for u, v in pairs]).gather(0, k[None])[0]
    return (peak & (low < 0) & (low.abs() > high.abs())).reshape(b, s, h, w)


# structures whose points `pick_points(..., centre=True)` spreads along their centre lines
CENTRE_LINE_STRUCTURES = ("true vessels",)


def pick_points(weight: torch.Tensor, names: tuple[str, ...], n: int,
                centre: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S, H, W] weights of the structures `names` -> (points [B, S, n, 2] as (y, x) px, valid
    [B, S, n]). A pixel is on a structure above its STRUCTURE_THRESHOLD; the n points are spread
    evenly over those pixels in raster order (deterministic: the same image gives the same points),
    so they cover the structure's extent. With `centre`, only the centre-line pixels of the
    structures of CENTRE_LINE_STRUCTURES count (`centre_lines`): their points are spread by length,
    not by area, so a thin branch gets its share beside a wide main vessel. A structure with no such
    pixel (its image absent) has no valid point."""
    b, s, h, w = weight.shape
    flat = weight.reshape(b, s, -1).float()
    q = torch.tensor([STRUCTURE_THRESHOLD[m][0] for m in names], device=flat.device)
    share = torch.tensor([STRUCTURE_THRESHOLD[m][1] for m in names], device=flat.device)
    ranked = flat[..., ::QUANTILE_STRIDE].sort(dim=-1).values                         # every 5th pixel: 5x less to sort
    k = ((ranked.shape[-1] - 1) * q).round().long()                                    # the quantile's rank
    thr = share * ranked.gather(2, k[None, :, None].expand(b, -1, 1)).squeeze(-1)       # [B, S]
    on = (flat > thr[..., None]) & (thr[..., None] > 1e-4)
    lines = [j for j, m in enumerate(names) if m in CENTRE_LINE_STRUCTURES] if centre else []
    if lines:
        ridge = centre_lines(weight[:, lines]).reshape(b, len(lines), -1)
        on[:, lines] &= ridge
    rank = on.long().cumsum(dim=-1)                                                    # [B, S, HW]
    count = rank[..., -1]
    want = (torch.linspace(0, 1, n, device=flat.device) * (count[..., None] - 1).clamp(min=0)).round().long() + 1
    idx = torch.searchsorted(rank, want).clamp(max=h * w - 1)                          # [B, S, n]
    points = torch.stack([(idx // w).float(), (idx % w).float()], dim=-1)
    return points, (count > 0)[..., None].expand(-1, -1, n)


def sample_profiles(planes: torch.Tensor, points: torch.Tensor, normal: torch.Tensor,
                    half_px: float = PROFILE_HALF_PX, samples: int = PROFILE_SAMPLES,
                    along: bool = False) -> torch.Tensor:
    """planes [B, C, H, W], points [B, S, N, 2] (y, x px), normals [B, S, N, 2] -> profiles [B, S, N, C,
    samples]: the planes bilinearly sampled across each point (edge values beyond the frame). With
    `along`, [B, S, N, 2C, samples]: then also along the structure (the tangent, the normal turned
    a quarter: flipping the normal flips it too, so one mirror of both stays a symmetry), where a
    gap, a cut or a fade's onset lies within reach of the point."""
    b, c, h, w = planes.shape
    offsets = torch.linspace(-half_px, half_px, samples, device=planes.device)
    ways = [normal] + ([torch.stack([normal[..., 1], -normal[..., 0]], dim=-1)] if along else [])
    s, n = points.shape[1:3]
    out = []
    for way in ways:
        at = points[..., None, :] + way[..., None, :] * offsets[:, None]               # [B, S, N, L, 2]
        grid = torch.stack([(at[..., 1] + 0.5) / w * 2 - 1, (at[..., 0] + 0.5) / h * 2 - 1], dim=-1)
        got = F.grid_sample(planes.float(), grid.reshape(b, s * n, samples, 2).float(), mode="bilinear",
                            padding_mode="border", align_corners=False)              # [B, C, S * N, L]
        out.append(got.reshape(b, c, s, n, samples).permute(0, 2, 3, 1, 4))
    return torch.cat(out, dim=3)


def structure_profiles(x: torch.Tensor, weights: torch.Tensor, names: tuple[str, ...], n: int = PROFILE_POINTS,
                       half_px: float = PROFILE_HALF_PX, samples: int = PROFILE_SAMPLES,
                       along: bool = False, centre: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-path planes x [B, C, H, W] (its channels and top-hat planes) and structure weights
    [B, S, H, W] at the same size -> (profiles [B, S, n, len(PROFILE_PLANES), samples], valid [B, S, n]),
    each profile `samples` long over +-half_px (with `along`, 2 * len(PROFILE_PLANES) planes: across,
    then along the structure; with `centre`, the points of CENTRE_LINE_STRUCTURES on their centre lines)."""
    profiles, valid, _ = structure_profiles_at(x, weights, names, n, half_px, samples, along, centre)
    return profiles, valid


def structure_profiles_at(x: torch.Tensor, weights: torch.Tensor, names: tuple[str, ...], n: int = PROFILE_POINTS,
                          half_px: float = PROFILE_HALF_PX, samples: int = PROFILE_SAMPLES,
                          along: bool = False, centre: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`structure_profiles` and the points they were sampled at ([B, S, n, 2], (y, x) px)."""
    with torch.no_grad():
        weights = weights.float()
        points, valid = pick_points(weights, names, n, centre)
        profiles = sample_profiles(x[:, list(PROFILE_PLANES)], points, point_normals(weights, points), half_px, samples,
                                   along)
    return profiles, valid, points


def _point_encoder(planes: int, samples: int, hidden: int, channels: tuple[int, int]) -> nn.Sequential:
    """One point's profile [planes, samples] -> [hidden]: two 1-D convolutions across the structure
    (a dip's depth, width and offset are local shapes; a plain MLP on the flattened profile ranked
    the guidewire 0.03 lower in the standalone probe), then a linear layer."""
    a, b = channels
    return nn.Sequential(nn.Conv1d(planes, a, 5, padding=2), nn.GELU(),
                         nn.Conv1d(a, b, 5, padding=2, stride=2), nn.GELU(), nn.Flatten(),
                         nn.Linear(b * ((samples + 1) // 2), hidden), nn.GELU(), nn.Linear(hidden, hidden))


class ProfileEncoder(nn.Module):
    """Profiles [B, S, N, C, L] of S structures -> [B, S, out]: per structure a small encoder of each
    point's profile, made flip-invariant (the profile plus its mirror image, and their difference's
    magnitude), pooled over the valid points (mean, max, min) and projected; zero where a
    structure has no valid point."""

    def __init__(self, structures: int, out: int, hidden: int = 64, planes: int = len(PROFILE_PLANES),
                 samples: int = PROFILE_SAMPLES, channels: tuple[int, int] = (16, 32)):
        super().__init__()
        self.point = nn.ModuleList(_point_encoder(2 * planes, samples, hidden, channels) for _ in range(structures))
        self.project = nn.ModuleList(nn.Linear(3 * hidden, out) for _ in range(structures))

    def forward(self, profiles: torch.Tensor, valid: torch.Tensor,
                per_point: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """-> [B, S, out]; with `per_point`, also each point's feature before pooling [B, S, N, hidden]."""
        mirror = profiles.flip(-1)
        x = torch.cat([profiles + mirror, (profiles - mirror).abs()], dim=-2)             # [B, S, N, 2C, L]
        b, _, n, c, length = x.shape
        out, points = [], []
        for j, (point, project) in enumerate(zip(self.point, self.project, strict=True)):
            f = point(x[:, j].reshape(b * n, c, length).to(point[0].weight.dtype)).reshape(b, n, -1)  # [B, N, H]
            if per_point:
                points.append(f)
            m = valid[:, j, :, None]
            count = m.sum(dim=1).clamp(min=1)
            mean = (f * m).sum(dim=1) / count
            big = torch.finfo(f.dtype).max
            top = f.masked_fill(~m, -big).amax(dim=1)
            low = f.masked_fill(~m, big).amin(dim=1)
            any_ = m.any(dim=1)
            pooled = torch.cat([mean, top, low], dim=-1) * any_
            out.append(project(torch.nan_to_num(pooled)) * any_)
        out = torch.stack(out, dim=1)
        return (out, torch.stack(points, dim=1)) if per_point else out


# the metrics scored from profiles (`ProfileScorer`, MustSettings.profile_scores) and the structure each reads
PROFILE_STRUCTURE = {"guidewire_visibility": "live devices", "branch_discernibility": "true vessels"}
SCORER_POINTS = 256         # points per structure and image the scorer reads (a random half of them per training batch)


class ProfileScorer(nn.Module):
    """Level logits of some metrics (PROFILE_STRUCTURE) from the profiles across their structures
    alone: per metric a ProfileEncoder (wider than the summary's) and a small head. MUST mixes
    its level probabilities with the metric head's (`mix`, by `share`) once it is trained (`trained`, kept with
    the weights) and outside training: an untrained scorer never moves a score. Trained on its own
    (finetune/profile_warmup.py), after stage 1, on profiles cached once.

    Measured (benchmarks.bench_profiles, validation rows of the phantom): the guidewire's profiles
    alone rank its MOS at 0.85, the stage-1 heads at 0.78."""

    def __init__(self, metrics: tuple[str, ...], n_levels: int, hidden: int = 128, channels: tuple[int, int] = (32, 64),
                 half_px: float = PROFILE_HALF_PX, samples: int = PROFILE_SAMPLES, along: bool = False,
                 centre: bool = False):
        super().__init__()
        self.metrics = metrics
        self.half_px, self.samples, self.along, self.hidden = float(half_px), int(samples), bool(along), int(hidden)
        self.centre = bool(centre)       # vessel points spread along their centre lines (pick_points)
        self.scored = tuple(m for m in metrics if m in PROFILE_STRUCTURE)
        if not self.scored:
            raise ValueError(f"none of {list(metrics)} is scored from profiles ({list(PROFILE_STRUCTURE)})")
        self.structures = tuple(PROFILE_STRUCTURE[m] for m in self.scored)
        planes = len(PROFILE_PLANES) * (2 if self.along else 1)
        self.encoders = nn.ModuleList(ProfileEncoder(1, hidden, hidden=hidden, planes=planes, samples=self.samples,
                                                     channels=channels) for _ in self.scored)
        self.heads = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(),
                                                 nn.Linear(hidden, n_levels)) for _ in self.scored)
        self.register_buffer("trained", torch.zeros(()))
        # per scored metric, the scorer's share of the mixture with the head (stage 1p fits it on the
        # validation rows: finetune.profile_warmup.fit_shares)
        self.register_buffer("share", torch.full((len(self.scored),), 0.5))

    def profiles(self, x: torch.Tensor, n: int = SCORER_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-path planes [B, C, H, W] (channels and top-hat planes) -> (profiles [B, S, n, C', L],
        valid [B, S, n]) across each scored metric's structure."""
        profiles, valid, _ = self.profiles_at(x, n)
        return profiles, valid

    def profiles_at(self, x: torch.Tensor, n: int = SCORER_POINTS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`profiles` and the points they were sampled at ([B, S, n, 2], (y, x) px of x)."""
        from casiqa.model.pixel import ALONG, structure_planes

        w = structure_planes(x)[:, [ALONG.index(s) for s in self.structures]]
        return structure_profiles_at(x, w, self.structures, n, self.half_px, self.samples, self.along, self.centre)

    def forward(self, profiles: torch.Tensor, valid: torch.Tensor,
                per_point: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Profiles [B, S, N, C, L], valid [B, S, N] -> level logits [B, S, L] (S: `scored`); with
        `per_point`, also each point's feature [B, S, N, hidden] (stage 1p's point loss reads them)."""
        pooled, points = self.encode(profiles, valid)
        out = self.score(pooled)
        return (out, points) if per_point else out

    def encode(self, profiles: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Profiles [B, S, N, C, L], valid [B, S, N] -> (each scored metric's pooled profile feature
        [B, S, hidden], each point's feature [B, S, N, hidden]): the scorer up to its heads."""
        pooled, points = [], []
        for j, enc in enumerate(self.encoders):
            got, per = enc(profiles[:, j:j + 1], valid[:, j:j + 1], per_point=True)
            pooled.append(got[:, 0])
            points.append(per[:, 0])
        return torch.stack(pooled, dim=1), torch.stack(points, dim=1)

    def score(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, S, hidden] (`encode`) -> level logits [B, S, L]."""
        return torch.stack([head(pooled[:, j]) for j, head in enumerate(self.heads)], dim=1)

    def mix(self, logits: torch.Tensor, x: torch.Tensor, views: bool = False) -> torch.Tensor:
        """Heads' level logits [B, M, L] of the samples whose planes are x [B, C, H, W] -> the logits
        of the heads' and the scorer's level probabilities mixed (the scorer's weight `share`, the
        head's the rest; its expected score mixes the same way), for the scored metrics of the
        samples that show their structure (the others, and everything before the scorer is trained
        or while training, as the heads give them). With `views`, the scorer's own probabilities
        are the mean over the eight flips and rotations of x (pixel.DIHEDRAL), as the heads' are
        with `dihedral_scores`: its points are spread in raster order, which a turn changes, so one
        view alone moved the guidewire score of real frames by a median 0.12 points between
        orientations (evals.sanity)."""
        if not bool(self.trained) or self.training:
            return logits
        from casiqa.model.pixel import DIHEDRAL, dihedral

        turns = DIHEDRAL if views else DIHEDRAL[:1]
        own, valid = [], None
        for k, flip in turns:
            profiles, shown = self.profiles(dihedral(x.float(), k, flip))
            if not shown.any():      # no sample shows a structure (no live frame): in no view either
                return logits
            own.append(self(profiles, shown).float().log_softmax(-1))                   # [B, S, L]
            valid = shown if valid is None else valid | shown
        own = torch.logsumexp(torch.stack(own), dim=0) - math.log(len(own))
        out = logits.float().clone()
        for j, m in enumerate(self.scored):
            i = self.metrics.index(m)
            w = self.share[j].clamp(0.0, 1.0).float()
            both = torch.logsumexp(torch.stack([out[:, i].log_softmax(-1) + torch.log1p(-w), own[:, j] + torch.log(w)]), dim=0)
            out[:, i] = torch.where(valid[:, j].any(dim=-1, keepdim=True), both, out[:, i])
        return out.to(logits.dtype)
