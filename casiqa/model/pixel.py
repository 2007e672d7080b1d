"""MUST's pixel path: a small convolutional stem over the target and its aligned auxiliary images.

Generator failures in angiograms are thin and local: a guidewire a pixel wide that fades or
breaks, a side branch that is gone, a patch of noise. A vision transformer trained from scratch
learns such detail slowly, and its 14 px patches average it away before any nonlinearity sees
it. This path looks at the pixels directly, with the comparison built in: for each auxiliary
role it sees the auxiliary image and the difference target - auxiliary (in display grey, where
X-ray attenuation adds, so the difference to the live frame isolates the contrast agent and the
difference to the reference isolates the devices), plus a presence plane saying whether that
image was given; with both, live - reference (anatomy cancelled: the true devices and vessels,
of opposite sign). Its output is one feature vector per merged visual token (28 x 28 px of the
processed image), so MUST can add it to the target's tokens position by position.

Options (MustSettings): `pixel_patch`, the first layer's stride (2: a 3 x 3 conv at stride 2, the
default; 1: at full resolution, twice the cost; 4, 7, 14: a linear patchify, cheaper, blind to
thin lines in our probes); `pixel_tophat`, black top-hat planes of each image (thin dark
structures on a flat background), computed in one batched filter in `forward` or given with
the planes (the warm-up caches them; the tiny recipe
uses 5 px: with them the top-hat of the live frame is its wire alone, and the target minus the
reference is the target's wire, so the stem compares the two wires from its first layer; in a
4-epoch probe the guidewire-only validation SRCC went 0.34 -> 0.57 with them), with
`tophat_margin` zeroed within one window of the frame's edge (a collimated frame's cut corners
meet the edge in dark wedges thinner than the window, which outshone the wire); `dense`, a 1x1
head on the H/4 features that predicts per-metric damage maps (finetune.data.damage_maps): the
warm-up can then tell the stem where a failure is to within 4 px, not only which 28 px token
holds it (with MustSettings.dense_to_heads, each map's mean and max also join its metric's
head: how much of the image is damaged, as a number the head can read); `pool`, how the H/4
features reach the token grid (TokenPool: "max", or "max+mean", which adds each window's mean:
how much of it responds, not only how strongly); `along`, the H/4 features (and damage maps)
averaged along the live frame's devices, the target's own devices and the true vessels (ALONG,
along_pool), one vector per image that every metric head reads (with `along_own`, each head only
the structures its metric judges, ALONG_OF): how the target looks where its wire and vessels
should be, over their whole length, where the token grid's 28 px windows mix a pixel-wide wire
with its background. BatchNorm by default
(statistics fixed by `freeze`), GroupNorm (`norm="group"`) for per-sample statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from casiqa.model.profiles import ProfileEncoder, structure_profiles

ROLES = ("live", "reference")
UNIT = 28                           # px of one merged visual token (patch 14 x merge 2)

def in_channels(tophat: int, compare: tuple[int, ...] = ()) -> int:
    """The stem's input planes: target; per role: image, target - image, presence; live -
    reference; with the top-hat, one more plane per image; with `compare`, two device-comparison
    planes per size (both added in forward)."""
    return 2 + 3 * len(ROLES) + (1 + len(ROLES) if tophat else 0) + 2 * len(compare)


IN_CHANNELS = in_channels(0)


IMAGE_PLANES = (0, 1, 4)  # target, live, reference among the planes of PixelPath.channels
PRESENCE_PLANES = (3, 6)  # live's and reference's presence planes


def max_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Grey dilation of [B, C, H, W] by an odd size x size square, separable (max-pooling's
    implicit -inf padding gives the same as replicate padding for a maximum)."""
    p = size // 2
    x = F.max_pool2d(x, (1, size), stride=1, padding=(0, p))
    return F.max_pool2d(x, (size, 1), stride=1, padding=(p, 0))


def check_profiles(profiles: int, along: bool) -> None:
    """Profiles across the structures (PixelPath `profiles`) are a feature count >= 0 and have a
    summary along the structures to join."""
    if profiles < 0:
        raise ValueError(f"pixel_profiles is a number of features (0: off), got {profiles}")
    if profiles and not along:
        raise ValueError("profiles across the structures join the summary along them: pixel_profiles needs "
                         "pixel_along: true")


def check_margin(margin: bool, tophat: int) -> None:
    """The top-hat margin (PixelPath `tophat_margin`) has top-hat planes to zero."""
    if margin and not tophat:
        raise ValueError("pixel_tophat_margin zeroes the top-hat planes near the edge: it needs pixel_tophat")


def check_compare(sizes, tophat: int) -> None:
    """Device-comparison window sizes are valid: distinct odd sizes >= 1, and top-hat planes to
    build them from."""
    if sizes and not tophat:
        raise ValueError("device-comparison planes are built from the top-hat planes: pixel_compare needs "
                         "pixel_tophat, so set tophat too")
    if any(c < 1 or c % 2 == 0 for c in sizes) or len(set(sizes)) < len(sizes):
        raise ValueError(f"compare sizes must be distinct, odd and >= 1 px, got {list(sizes)}")


def device_comparison(tophat: torch.Tensor, both: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """The target's devices against the live frame's, at a few tolerances.

    tophat [B, 3, H, W]: top-hat planes of target, live and reference (tophat_planes); both [B]:
    1 where live and reference were both given. The target's devices are what its top-hat has
    and the reference's has not (the vessels cancel, the wire inside them stays); the true
    devices are the live frame's top-hat. Per size s (an odd window in px): `missing`, true
    device with no target device within s // 2 px (a faded, broken or displaced wire, a lost
    catheter), and `extra`, target device with no true device within s // 2 px (a displaced or
    ghost wire). Over sizes the pair grades a displacement by its distance, which a 3 x 3 stem
    sees only after pooling has blurred where things were. Zero without both auxiliary images.
    -> [B, 2 * len(sizes), H, W]."""
    target = F.relu(tophat[:, 0:1] - tophat[:, 2:3])
    live = tophat[:, 1:2]
    planes, grown, done = [], torch.cat([target, live], dim=1), 1
    for s in sorted(sizes):  # each window grows the last one's dilation: 3, then 9 = 3 (+) 7, ...
        grown = max_filter(grown, s - done + 1) if s > done else grown
        done = s
        planes += [(s, F.relu(live - grown[:, 0:1])), (s, F.relu(target - grown[:, 1:2]))]
    order = {s: i for i, s in enumerate(sizes)}
    planes = [p for _, p in sorted(planes, key=lambda sp: order[sp[0]])]  # stable: missing, extra per size
    return torch.cat(planes, dim=1) * both.to(tophat.dtype)[:, None, None, None]


def black_tophat(images: torch.Tensor, size: int) -> torch.Tensor:
    """Grey closing minus the image, for [..., H, W]: dark structures narrower than `size` px (a
    guidewire, a catheter, small vessels) on a flat background; the classical vessel-enhancement
    filter. An all-zero plane (an absent image) stays zero."""
    shape = images.shape
    x = images.reshape(-1, 1, *shape[-2:])
    pad = size // 2
    dilated = F.max_pool2d(F.pad(x, (pad,) * 4, mode="replicate"), size, stride=1)
    closed = -F.max_pool2d(F.pad(-dilated, (pad,) * 4, mode="replicate"), size, stride=1)
    return (closed - x).reshape(shape)


def edge_zeroed(x: torch.Tensor, margin: int) -> torch.Tensor:
    """[..., H, W] with the outermost `margin` px on every side set to zero."""
    keep = torch.zeros(x.shape[-2:], dtype=x.dtype, device=x.device)
    keep[margin:x.shape[-2] - margin, margin:x.shape[-1] - margin] = 1
    return x * keep


def images_from_patches(pixel_values: torch.Tensor, grid_thw: torch.Tensor, patch: int, merge: int,
                        temporal: int) -> list[torch.Tensor]:
    """Qwen2.5-VL's flattened patches back to grey images [H, W], one per image.

    The image processor lays patches out as (t, h/m, w/m, m, m) rows of (C, T, P, P) values;
    the grey image is the mean over channels of the first temporal copy (normalised values).
    """
    out, start = [], 0
    for t, h, w in grid_thw.tolist():
        n = t * h * w
        x = pixel_values[start : start + n]
        start += n
        channels = x.shape[-1] // (temporal * patch * patch)
        x = x.reshape(t, h // merge, w // merge, merge, merge, channels, temporal, patch, patch)[0, ..., 0, :, :]
        x = x.mean(dim=4)                                       # [h/m, w/m, m, m, P, P]
        x = x.permute(0, 2, 4, 1, 3, 5).reshape(h * patch, w * patch)
        out.append(x)
    return out


# The eight flips and rotations of a square (the dihedral group D4) as (quarter turns, then a left-right
# flip); the first is the image as given. A score averaged over all eight is the same for an image
# and any of them, since they are the same set of eight.
DIHEDRAL = tuple((k, flip) for k in range(4) for flip in (False, True))


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """[..., H, W] turned k quarter turns, then flipped left-right when `flip`."""
    x = torch.rot90(x, k, (-2, -1))
    return x.flip(-1) if flip else x


def undo_dihedral(tokens: torch.Tensor, grid: tuple[int, int], k: int, flip: bool) -> torch.Tensor:
    """Tokens [..., N, D] of a view (`dihedral(image, k, flip)`, its token grid `grid` = (h, w)) back
    in the given image's token order. Exact, since a merged token is a whole 28 px cell of both."""
    g = tokens.reshape(*tokens.shape[:-2], *grid, tokens.shape[-1])       # [..., h, w, D]
    g = g.flip(-2) if flip else g
    g = torch.rot90(g, -k, (-3, -2))
    return g.reshape(tokens.shape)


def undo_dihedral_map(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """A map [..., H, W] of a view (`dihedral(image, k, flip)`) back onto the given image's grid."""
    x = x.flip(-1) if flip else x
    return torch.rot90(x, -k, (-2, -1))


def _norm(kind: str, c: int) -> nn.Module:
    return nn.BatchNorm2d(c) if kind == "batch" else nn.GroupNorm(8, c)


POOLS = ("max", "max+mean")


class TokenPool(nn.Module):
    """H/4 features onto the token grid (a 7 x 7 window): "max", the strongest response (is there
    a wire, a gap, a streak); "max+mean" adds the window's mean as more channels (how much of it:
    the length of a gap, the share of a branch gone, how much ghost wire), which max-pooling
    discards."""

    def __init__(self, size: int, mode: str = "max"):
        super().__init__()
        if mode not in POOLS:
            raise ValueError(f"pixel pool must be one of {', '.join(POOLS)}, got {mode!r}")
        self.kernel_size, self.mode = size, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = F.max_pool2d(x, self.kernel_size)
        return top if self.mode == "max" else torch.cat([top, F.avg_pool2d(x, self.kernel_size)], dim=1)


# Where the target is judged along its true structures (PixelPath `along`): the live frame's
# devices (its top-hat: the true wire and catheter), the target's own devices (its top-hat where the
# reference's has none: a wire drawn where there is none shows here) and the true vessels (live -
# reference: the contrast agent alone, both images needed).
ALONG = ("live devices", "target devices", "true vessels")
# with `along_own` (MustSettings.pixel_along_own), what each metric's head reads of ALONG: the structures
# its metric judges (artefacts can lie on any of them)
ALONG_OF = {"guidewire_visibility": ("live devices", "target devices"),
            "branch_discernibility": ("true vessels",),
            "artifact_interference": ALONG}
LIVE_MINUS_REFERENCE = 7  # that plane among the planes of PixelPath.channels


def check_along(along: bool, pixel_path: bool, tophat: int, own: bool = False) -> None:
    """Pooling along the structures is possible: the pixel path is on and has the top-hat planes
    that find the structures (and `own`, each head its own structures, needs the pooling)."""
    if along and not (pixel_path and tophat):
        raise ValueError("pixel_along needs the pixel path (pixel_path) with its top-hat planes (pixel_tophat), "
                         "which find the structures it pools along")
    if own and not along:
        raise ValueError("pixel_along_own (each head reads only its own structures) needs pixel_along: true")


def along_mask(metrics: tuple[str, ...]) -> torch.Tensor:
    """[M, len(ALONG)]: 1 where a metric's head reads a structure (ALONG_OF)."""
    unknown = [m for m in metrics if m not in ALONG_OF]
    if unknown:
        raise ValueError(f"no structures to pool along are named for {', '.join(unknown)} (pixel.ALONG_OF)")
    return torch.tensor([[float(s in ALONG_OF[m]) for s in ALONG] for m in metrics])


def structure_planes(x: torch.Tensor) -> torch.Tensor:
    """Planes [B, C, H, W] of `channels` followed by the top-hat planes -> [B, len(ALONG), H, W]:
    where each structure named by ALONG is, >= 0 (zero where its image is absent)."""
    th = x[:, IN_CHANNELS:IN_CHANNELS + 3]
    return torch.stack([th[:, 1], F.relu(th[:, 0] - th[:, 2]), F.relu(x[:, LIVE_MINUS_REFERENCE])], dim=1)


def along_weights(x: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """Planes [B, C, H, W] of `channels` followed by the top-hat planes -> [B, len(ALONG), H/cell,
    W/cell] weights >= 0 on the structures named by ALONG, max-pooled onto the cell grid (a wire a
    pixel wide keeps its full strength) and squared (a strong response outweighs background
    texture). A structure whose image is absent has zero weight."""
    return F.max_pool2d(structure_planes(x).float(), cell) ** 2


def along_pool(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Features [B, C, h, w] averaged along each structure (weights [B, S, h, w]) -> [B, S * (C + 1)]:
    per structure the weighted mean of every channel (zero where the structure has no weight) and
    how much of the structure there is (log of 1 + its mean weight)."""
    w = weights.to(features.dtype)
    mass = w.sum(dim=(-2, -1))                                                    # [B, S]
    mean = torch.einsum("bshw,bchw->bsc", w, features) / (mass[..., None] + 1e-6)  # [B, S, C]
    size = torch.log1p(mass / (w.shape[-1] * w.shape[-2]))[..., None]
    return torch.cat([mean, size], dim=-1).flatten(1)


def _block(c_in: int, c_out: int, pool: bool, norm: str) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1), _norm(norm, c_out), nn.GELU()]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


class PixelPath(nn.Module):
    """[target, (aux, target - aux, presence) per role, live - reference] -> one feature per
    merged token [B, N, D]."""

    def __init__(self, dim: int, width: int = 48, diff_gain: float = 4.0, norm: str = "batch", patch: int = 2,
                 tophat: int = 0, dense: int = 0, compare: tuple[int, ...] = (), pool: str = "max",
                 along: bool = False, along_own: bool = False, tophat_margin: bool = False, profiles: int = 0):
        super().__init__()
        self.diff_gain = diff_gain  # differences are small in grey: scale them to the images' range
        if tophat and (tophat < 3 or tophat % 2 == 0):
            raise ValueError(f"tophat must be 0 (off) or an odd size >= 3, got {tophat}")
        self.tophat = tophat
        self.tophat_margin = tophat_margin
        self.compare = compare = tuple(int(c) for c in compare)
        check_compare(compare, tophat)
        self.in_channels = c_in = in_channels(tophat, compare)
        if patch not in (1, 2, 4, 7, 14):
            raise ValueError(f"pixel patch must be 1, 2, 4, 7 or 14 (a merged token is 28 px), got {patch}")
        if pool != "max" and patch not in (1, 2):
            raise ValueError(f"pixel pool {pool!r} needs pixel patch 1 or 2 (it pools the H/4 stage), got {patch}")
        if patch in (1, 2):
            # nonlinear from the first pixel on: a wire a pixel wide survives a 3 x 3 filter and
            # max-pooling, where a strided linear patchify would average it into the background
            fine = max(width // 2, 8)
            self.stem = nn.Sequential(
                nn.Conv2d(c_in, fine, 3, stride=patch, padding=1), _norm(norm, fine), nn.GELU(),
                *([nn.MaxPool2d(2)] if patch == 1 else []),                                          # H/2
                _block(fine, width, True, norm),                                                     # H/4
                nn.Conv2d(width, width, 3, padding=1), _norm(norm, width), nn.GELU(),
                TokenPool(7, pool),                                                                  # H/28
                _block(width * (2 if pool == "max+mean" else 1), 2 * width, False, norm),
                _block(2 * width, 2 * width, False, norm),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(c_in, width, patch, stride=patch), _norm(norm, width), nn.GELU(),
                _block(width, width, False, norm),
                *([_block(width, width, True, norm)] if patch in (4, 7) else []),
                _block(width, 2 * width, True, norm),
                _block(2 * width, 2 * width, False, norm),
            )
        self.out = nn.Sequential(nn.LayerNorm(4 * width), nn.Linear(4 * width, dim))
        # dense damage maps from the H/4 features (before they are pooled onto the token grid):
        # a training signal where the failure is, pixel-close, not only in which token
        self.dense = None
        if dense:
            if patch not in (1, 2):
                raise ValueError(f"dense damage maps need pixel patch 1 or 2 (an H/4 stage), got {patch}")
            self.dense = nn.Conv2d(width, dense, 1)
        # the H/4 features (and damage maps) averaged along the true devices, the target's devices and
        # the true vessels: how the target looks where its wire and vessels should be, over their
        # whole length, as one vector per image (ALONG, along_pool)
        self.along_dim, self.along_own = 0, along and along_own
        if along:
            if patch not in (1, 2) or not tophat:
                raise ValueError("pooling along the structures needs pixel patch 1 or 2 (an H/4 stage) and the "
                                 "top-hat planes (tophat) that find them")
            per = width + 1 + dense + profiles
            self.along_dim = len(ALONG) * per
            # along_own: each structure normalised on its own, so that no structure's values reach
            # another's through the normalisation (a head reading only the vessels reads nothing of
            # the devices); else one normalisation over the whole vector
            self.along_norm = nn.LayerNorm(per if along_own else self.along_dim)
        # profiles across each structure of ALONG, sampled sub-pixel where it is (casiqa/model/profiles.py),
        # joined to that structure's summary
        self.profiles = None
        check_profiles(profiles, along)
        if profiles:
            self.profiles = ProfileEncoder(len(ALONG), profiles)
        if dense or along:
            self._fine_at = next(i for i, m in enumerate(self.stem) if isinstance(m, TokenPool))

    def freeze(self) -> None:
        """Fix the path as trained (weights and normalisation statistics), e.g. for a later stage."""
        self.requires_grad_(False)
        self.frozen = True
        super().train(False)

    def train(self, mode: bool = True):
        return super().train(mode and not getattr(self, "frozen", False))

    def channels(self, target: torch.Tensor, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        """target [H, W], aux role -> [H, W] (aligned, same size) -> [C, H, W]."""
        present = {r: torch.full((1,), float(aux.get(r) is not None), device=target.device) for r in ROLES}
        images = {r: (torch.zeros_like(target) if aux.get(r) is None else aux[r])[None] for r in ROLES}
        return self.batch_channels(target[None], images, present)[0]

    def batch_channels(self, target: torch.Tensor, aux: dict[str, torch.Tensor],
                       present: dict[str, torch.Tensor]) -> torch.Tensor:
        """`channels` of a batch: target [B, H, W], aux role -> [B, H, W] (zeros where absent),
        present role -> [B] (1 given, 0 absent) -> [B, C, H, W]."""
        chans, shown = [target], {}
        for role in ROLES:
            p = present[role].to(target.device, target.dtype)[:, None, None]
            shown[role] = a = aux[role] * p
            chans += [a, self.diff_gain * (target - a) * p, p.expand_as(target)]
        # live - reference cancels the anatomy: devices of the live frame on one side of zero,
        # contrast-filled vessels on the other; what the target's devices and vessels are judged against
        both = (present["live"] * present["reference"]).to(target.device, target.dtype)[:, None, None]
        chans.append(self.diff_gain * (shown["live"] - shown["reference"]) * both)
        return torch.stack(chans, dim=1)

    def tophat_planes(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """[B, C, H, W] planes of `channels` -> [B, 3, H, W] top-hat planes of target, live and
        reference, in one batched filter (absent images are zero planes and stay zero); `size`
        overrides the path's own top-hat window (images at another scale than the model's). With
        `tophat_margin`, zero within one window of the frame's edge: there the filter's window
        leaves the image, and a collimated frame's dark corners meet the edge in narrow dark wedges
        that the filter takes for the strongest "wires" in the image."""
        size = size or self.tophat
        th = self.diff_gain * black_tophat(x[:, list(IMAGE_PLANES)], size)
        return edge_zeroed(th, size) if self.tophat_margin else th

    def derived_planes(self, x: torch.Tensor, tophat: int | None = None) -> torch.Tensor:
        """[B, C, H, W] planes of `channels` -> the planes forward derives from them: the top-hat
        planes (window `tophat`, else the path's own) and, with `compare`, the device-comparison
        planes [B, in_channels - C, H, W]."""
        th = self.tophat_planes(x, tophat)
        if not self.compare:
            return th
        both = x[:, PRESENCE_PLANES[0], 0, 0] * x[:, PRESENCE_PLANES[1], 0, 0]
        return torch.cat([th, device_comparison(th, both, self.compare)], dim=1)

    def derived_keep(self, live: bool, reference: bool) -> torch.Tensor:
        """Which derived planes survive when only the given auxiliary images are kept [in_channels - C]:
        a dropped image's top-hat plane is zero, and the comparison needs both."""
        both = float(live and reference)
        return torch.tensor([1.0, float(live), float(reference)] + [both] * (2 * len(self.compare)))

    def forward(self, x: torch.Tensor, dense: bool = False, along: bool = False):
        """x [B, C, H, W] (planes of `channels`, optionally followed by `derived_planes`) with H, W
        multiples of 28 -> [B, (H/28) * (W/28), D]; with `dense`, (tokens, the damage-map logits
        [B, M, H/4, W/4]) (needs the dense head); with `along`, (tokens, those logits or None, the
        summary along the structures [B, along_dim]) (needs `along` at construction)."""
        if self.tophat and x.shape[1] == IN_CHANNELS:  # derived planes not given (the warm-up caches them)
            x = torch.cat([x, self.derived_planes(x)], dim=1)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"the pixel path takes {IN_CHANNELS} planes (PixelPath.channels)"
                             + (f" or {self.in_channels} with its derived planes" if self.tophat else "")
                             + f", got {x.shape[1]}")
        if dense and self.dense is None:
            raise ValueError("this pixel path has no dense head (MustSettings.pixel_dense)")
        if along and not self.along_dim:
            raise ValueError("this pixel path does not pool along the structures (MustSettings.pixel_along)")
        # channels-last: the convolutions' fast layout on CPU (oneDNN; ~20 % less time per batch)
        h = x.contiguous(memory_format=torch.channels_last)
        fine = summary = None
        for i, layer in enumerate(self.stem):
            if (dense or along) and i == self._fine_at:
                fine = None if self.dense is None else self.dense(h)     # [B, M, H/4, W/4]
                if along:
                    summary = self._along(x, h, fine)
            h = layer(h)                                                  # finally [B, 2w, H/28, W/28]
        grid = (x.shape[-2] // UNIT, x.shape[-1] // UNIT)
        if tuple(h.shape[-2:]) != grid:  # patch 4: stride 16, area-pooled onto the token grid
            h = F.adaptive_avg_pool2d(h, grid)
        # each token also sees its 3 x 3 neighbourhood's strongest response (thin structures
        # crossing token borders, context of a gap)
        h = torch.cat([h, F.max_pool2d(h, 3, stride=1, padding=1)], dim=1)  # [B, 4w, h, w]
        tokens = self.out(h.flatten(2).transpose(1, 2))
        if along:
            return tokens, fine if dense else None, summary
        return (tokens, fine) if dense else tokens

    def _along(self, x: torch.Tensor, h: torch.Tensor, fine: torch.Tensor | None) -> torch.Tensor:
        """The H/4 features h [B, w, H/4, W/4] (and the damage maps) along the structures -> [B, along_dim]."""
        weights = along_weights(x, x.shape[-1] // h.shape[-1])
        feats = h if fine is None else torch.cat([h, torch.sigmoid(fine)], dim=1)
        pooled = along_pool(feats.float(), weights)
        if self.profiles is not None:
            profiles, valid = structure_profiles(x, structure_planes(x), ALONG)
            across = self.profiles(profiles, valid)                                   # [B, S, P]
            pooled = torch.cat([pooled.unflatten(1, (len(ALONG), -1)), across.float()], dim=-1).flatten(1)
        pooled = pooled.to(h.dtype)
        if self.along_own:
            return self.along_norm(pooled.unflatten(1, (len(ALONG), -1))).flatten(1)
        return self.along_norm(pooled)


def align(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An auxiliary grey image [H', W'] resampled onto the target's pixel grid."""
    if tuple(image.shape) == tuple(size):
        return image
    return F.interpolate(image[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
