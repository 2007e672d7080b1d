"""The CAS-IQA VLM: Qwen2.5-VL with MUST between its vision encoder and language model.

The hook is the inner model's `get_image_features`: the visual tokens of every image pass
through MUST before they are scattered into the image-pad positions (STACK-NOTES). The inner
`forward` reads each image's role (target / live / reference, the role token before each
<|vision_start|>) and sample from `input_ids`, so MUST knows which images belong together;
heads' level logits, routing maps and (at inference) damage maps come back on the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import MultimodalCausalLMOutputWithPast, Qwen2_5_VLPreTrainedModel
from transformers.vision_utils import get_vision_window_index

from casiqa.metrics import LEVELS, METRICS
from casiqa.model.config import CasIqaConfig
from casiqa.model.findings import findings_loss
from casiqa.model.levels import evidence_loss, soft_label_loss
from casiqa.model.must import Must
from casiqa.model.pixel import images_from_patches
from casiqa.model.profiles import ProfileScorer


@dataclass
class MustImageOutput(BaseModelOutputWithPooling):
    level_logits: torch.Tensor | None = None          # [B, M, L]
    routing: tuple[torch.Tensor | None, ...] | None = None  # per sample [h, w, M]
    route_logits: tuple[torch.Tensor | None, ...] | None = None
    finding_logits: torch.Tensor | None = None        # [B, K, 2] (casiqa/model/findings.py)
    damage: tuple[torch.Tensor | None, ...] | None = None  # per sample [M, H/4, W/4] damage maps (inference)


@dataclass
class CasIqaOutput(MultimodalCausalLMOutputWithPast):
    level_logits: torch.Tensor | None = None
    routing: tuple[torch.Tensor | None, ...] | None = None
    head_loss: torch.Tensor | None = None
    evidence_loss: torch.Tensor | None = None
    finding_logits: torch.Tensor | None = None
    findings_loss: torch.Tensor | None = None
    damage: tuple[torch.Tensor | None, ...] | None = None


def _init_must(module: torch.nn.Module) -> None:
    """Zero the residual outputs and gates that must start closed, the profile scorer's share at an even
    mixture; the rest is standard init."""
    if getattr(module, "_zero_init", False):
        init.zeros_(module.weight)
        init.zeros_(module.bias)
    for gate in ("cross_gate", "vit_gate"):
        if isinstance(getattr(module, gate, None), torch.nn.Parameter):
            init.zeros_(getattr(module, gate))
    if hasattr(module, "role_embed"):
        for p in module.role_embed.values():
            init.zeros_(p)
    if isinstance(module, ProfileScorer):  # an even mixture: what checkpoints saved before `share` existed used
        init.constant_(module.share, 0.5)


def image_roles(input_ids: torch.Tensor, config: CasIqaConfig) -> tuple[list[str], list[int]]:
    """Role and sample of every image, in the order the processor packs them (row-major)."""
    by_id = {v: k for k, v in (config.role_token_ids or {}).items()}
    rows, cols = (input_ids == config.vision_start_token_id).nonzero(as_tuple=True)
    roles, samples = [], []
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        before = int(input_ids[r, c - 1]) if c > 0 else -1
        roles.append(by_id.get(before, "target"))
        samples.append(r)
    return roles, samples


class CasIqaModel(Qwen2_5_VLModel):
    config_class = CasIqaConfig

    def __init__(self, config: CasIqaConfig):
        super().__init__(config)
        vc = config.vision_config
        settings = config.must_settings()
        self.must_depths = sorted({d % vc.depth for d in settings.depths})
        self.must = Must(settings, dim=vc.out_hidden_size, patch_dim=vc.hidden_size * vc.spatial_merge_size**2,
                         metrics=METRICS, n_levels=len(LEVELS), n_paths=len(self.must_depths) + int(settings.embed_path))
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        _init_must(module)

    def get_image_features(self, pixel_values, image_grid_thw=None, roles=None, samples=None, batch_size=None, **kwargs):
        captured: dict[int | str, torch.Tensor] = {}

        def keep(key):
            return lambda _m, _i, out: captured.__setitem__(key, out[0] if isinstance(out, tuple) else out)

        hooks = []
        if self.must.settings.enabled:
            hooks = [self.visual.blocks[d].register_forward_hook(keep(d)) for d in self.must_depths]
            if self.must.settings.embed_path:
                hooks.append(self.visual.patch_embed.register_forward_hook(keep("embed")))
        try:
            vision = self.visual(pixel_values.type(self.visual.dtype), grid_thw=image_grid_thw, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        merge = self.visual.spatial_merge_size
        split = (image_grid_thw.prod(-1) // merge**2).tolist()
        final = list(torch.split(vision.pooler_output, split))                          # per image [N_i, D]
        paths: list[list[torch.Tensor]] = [[] for _ in split]
        if captured:
            # block outputs are in window order at patch level: regroup 2x2 units, undo the window
            # permutation; the patch embedding comes before that permutation
            window_index, _ = get_vision_window_index(image_grid_thw, merge, self.visual.window_size, self.visual.patch_size)
            reverse = torch.argsort(window_index).to(vision.pooler_output.device)
            keys = (["embed"] if "embed" in captured else []) + list(self.must_depths)
            for key in keys:
                x = captured[key]
                merged = x.reshape(-1, x.shape[-1] * merge**2)                            # [sum N_i, 4C]
                merged = merged if key == "embed" else merged[reverse]
                for i, chunk in enumerate(torch.split(merged, split)):
                    paths[i].append(chunk)
        grids = [(h // merge, w // merge) for _, h, w in image_grid_thw.tolist()]
        if roles is None:  # called on its own: every image is a target of its own sample
            roles, samples, batch_size = ["target"] * len(split), list(range(len(split))), len(split)
        pixels = None
        if self.must.settings.enabled and self.must.settings.pixel_path:
            vc = self.config.vision_config
            pixels = images_from_patches(pixel_values, image_grid_thw, vc.patch_size, merge, vc.temporal_patch_size)
            pixels = [p.to(vision.pooler_output.dtype) for p in pixels]
        result = self.must(final, paths, grids, roles, samples, batch_size, pixels=pixels)
        return MustImageOutput(last_hidden_state=vision.last_hidden_state, pooler_output=tuple(result.tokens),
                               level_logits=result.level_logits, routing=tuple(result.routing),
                               route_logits=tuple(result.route_logits), finding_logits=result.finding_logits,
                               damage=None if result.damage is None else tuple(result.damage))

    def forward(self, input_ids=None, pixel_values=None, image_grid_thw=None, mm_encoder_outputs=None, **kwargs):
        if pixel_values is not None and mm_encoder_outputs is None:
            if input_ids is None:
                raise ValueError("CAS-IQA needs input_ids with images: image roles are read from them")
            roles, samples = image_roles(input_ids, self.config)
            if len(roles) != len(image_grid_thw):
                raise ValueError(f"{len(roles)} <|vision_start|> markers for {len(image_grid_thw)} images")
            mm_encoder_outputs = {"image": self.get_image_features(
                pixel_values, image_grid_thw, roles=roles, samples=samples, batch_size=input_ids.shape[0])}
        return super().forward(input_ids=input_ids, pixel_values=None, image_grid_thw=image_grid_thw,
                               mm_encoder_outputs=mm_encoder_outputs, **kwargs)


class CasIqaForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    config_class = CasIqaConfig

    def __init__(self, config: CasIqaConfig):
        # The parent's __init__ would build a plain Qwen2_5_VLModel first: build ours directly.
        Qwen2_5_VLPreTrainedModel.__init__(self, config)
        self.model = CasIqaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        _init_must(module)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None, labels=None,
                use_cache=None, pixel_values=None, image_grid_thw=None, mm_token_type_ids=None, logits_to_keep=0,
                mm_encoder_outputs=None, level_targets: torch.Tensor | None = None,
                evidence_targets: torch.Tensor | None = None, finding_targets: torch.Tensor | None = None,
                **kwargs) -> CasIqaOutput:
        """As Qwen2.5-VL's forward (parameters spelled out: generate() checks them); `level_targets`
        [B, M, L] (soft labels) adds `head_loss`, which the trainer weighs against the LM loss;
        `finding_targets` [B, K, 2] (findings.finding_targets) adds `findings_loss`."""
        out = super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, pixel_values=pixel_values,
            image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids, logits_to_keep=logits_to_keep,
            mm_encoder_outputs=mm_encoder_outputs, **kwargs,
        )
        images = out.image_outputs
        level_logits = getattr(images, "level_logits", None)
        head_loss = None
        if level_targets is not None and level_logits is not None:
            head_loss = soft_label_loss(level_logits, level_targets.to(level_logits.device))
        route_logits = getattr(images, "route_logits", None)
        evidence = None if evidence_targets is None else evidence_loss(route_logits, evidence_targets)
        found = getattr(images, "finding_logits", None)
        return CasIqaOutput(**dict(out.items()), level_logits=level_logits, routing=getattr(images, "routing", None),
                            head_loss=head_loss, evidence_loss=evidence, finding_logits=found,
                            findings_loss=findings_loss(found, finding_targets), damage=getattr(images, "damage", None))
