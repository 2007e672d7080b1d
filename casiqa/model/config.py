"""Model configuration: MUST settings and the registered CAS-IQA config (a Qwen2.5-VL config + MUST)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import Qwen2_5_VLConfig

MODEL_TYPE = "casiqa_qwen2_5_vl"


@dataclass
class MustSettings:
    enabled: bool = True                     # False: plain VLM + heads on pooled target tokens (ablation)
    depths: list[int] = field(default_factory=lambda: [1])  # vision blocks whose outputs add paths
    embed_path: bool = True                  # the patch embedding (depth 0: near-pixel detail) adds a path
    pixel_path: bool = True                  # a conv stem over target and target - aux pixels adds a path
    pixel_width: int = 48                    # channels of that stem (its last stage has twice as many)
    pixel_tophat: int = 0                    # black top-hat planes of this size (0: none): thin dark structures
    pixel_tophat_margin: bool = False        # those planes zeroed within one window of the frame's edge (collimator wedges)
    pixel_compare: list[int] = field(default_factory=list)  # device-comparison planes at these windows (px; needs pixel_tophat)
    pixel_dense: bool = False                # a 1x1 head on its H/4 features predicting dense damage maps (warm-up)
    dense_to_heads: bool = True              # with pixel_dense: each map's mean and max join its metric's head
    pixel_pool: str = "max"                  # onto the token grid: "max", or "max+mean" (also how much of a window)
    pixel_along: bool = False                # the heads also read the H/4 features averaged along the true devices
                                             # and vessels (pixel.ALONG; needs pixel_tophat)
    pixel_along_own: bool = False            # with pixel_along: each head reads only its metric's structures (ALONG_OF)
    profile_scores: bool = False             # guidewire and branches also scored from profiles across their structures
                                             # (ProfileScorer), mixed with their heads once it is trained
    profile_half_px: float = 7.0             # its profiles reach this far either side of the structure (px, pixel path's size)
    profile_samples: int = 33                # ...in this many samples
    profile_along: bool = False              # its profiles also run along the structure (gaps, cuts, fades' onsets)
    profile_centre_lines: bool = False       # its vessel points lie on the vessels' centre lines: spread by length
    pixel_profiles: int = 0                  # with pixel_along: profiles across each structure, sampled sub-pixel,
                                             # join its summary as this many features (0: off; profiles.py)
    pixel_patch: int = 2                     # its first layer's stride in px (1, 2, 4, 7 or 14: finer sees more, costs more)
    dihedral_scores: bool = False            # inference: heads averaged over the pixel path's 8 flips and rotations
    cross_attention: bool = True             # target tokens also attend to all aux tokens
    heads: int = 4                           # attention heads of that cross-attention
    router: Literal["soft", "topk"] = "soft"
    top_k: int = 1
    temperature: float = 1.0
    hidden: int = 128                        # width of adapters and heads
    pool: Literal["attention", "attention+mass"] = "attention"  # + routed mean: how much, not only how bad
    findings: dict[str, list[str]] = field(default_factory=dict)  # metric -> failure kinds its branch reports
                                             # (present? how severe?) for the prompt (casiqa/model/findings.py)

    def __post_init__(self) -> None:
        if self.router not in ("soft", "topk"):
            raise ValueError(f"router must be 'soft' or 'topk', got {self.router!r}")
        if self.pool not in ("attention", "attention+mass"):
            raise ValueError(f"pool must be 'attention' or 'attention+mass', got {self.pool!r}")
        if self.temperature <= 0 or self.top_k < 1 or self.hidden < 1:
            raise ValueError("temperature must be > 0, top_k and hidden >= 1")
        from casiqa.model.pixel import POOLS, check_along, check_margin, check_profiles

        if self.pixel_pool not in POOLS:
            raise ValueError(f"pixel_pool must be one of {', '.join(POOLS)}, got {self.pixel_pool!r}")
        check_along(self.pixel_along, self.pixel_path, self.pixel_tophat, self.pixel_along_own)
        check_margin(self.pixel_tophat_margin, self.pixel_tophat)
        check_profiles(self.pixel_profiles, self.pixel_along)
        if self.profile_scores and not (self.enabled and self.pixel_path and self.pixel_tophat):
            raise ValueError("profile_scores finds the structures with the pixel path's top-hat planes: it needs must, "
                             "pixel_path and pixel_tophat")
        if self.profile_half_px <= 0 or self.profile_samples < 5:
            raise ValueError(f"profile_half_px must be > 0 and profile_samples >= 5, got {self.profile_half_px} and "
                             f"{self.profile_samples}")
        if self.pixel_width < 8 or self.pixel_width % 8:
            raise ValueError(f"pixel_width must be a positive multiple of 8, got {self.pixel_width}")

    def to_dict(self) -> dict:
        return asdict(self)


@strict
class CasIqaConfig(Qwen2_5_VLConfig):
    """Qwen2.5-VL config plus MUST settings, level-word and role-token ids, and provenance."""

    model_type = MODEL_TYPE
    must: dict | None = None                 # MustSettings as a dict
    level_token_ids: list[int] | None = None  # token id of each level word, LEVELS order
    role_token_ids: dict | None = None       # {"target": id, "live": id, "reference": id}
    base_model: str | None = None            # hub id or path of the pretrained VLM it started from

    def must_settings(self) -> MustSettings:
        # configs written before the pixel path (or its top-hat planes) existed lack the key: they have none
        return MustSettings(**{"pixel_path": False, "pixel_tophat": 0, **(self.must or {})})
