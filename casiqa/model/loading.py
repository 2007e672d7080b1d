"""Build, save and load CAS-IQA models: the tiny embedded architecture, a pretrained Qwen2.5-VL
(hub id or local path) with fresh MUST and heads, our own checkpoints (strict: any missing or
unexpected weight is an error, never a silent random initialisation), and a published
architecture with random weights (`from_architecture`: memory and throughput checks of a GPU
recipe where the weights cannot be downloaded).

    python -m casiqa.model.loading --out models/tiny-untrained            # a tiny untrained model
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from casiqa.model import CasIqaConfig, CasIqaForConditionalGeneration, CasIqaProcessor, MustSettings
from casiqa.model.processor import make_processor
from casiqa.model.tokenizer import ROLE_TOKENS, level_token_ids, train_tokenizer


class CheckpointError(RuntimeError):
    """A checkpoint that does not match the model it is loaded into."""


@dataclass
class TinySpec:
    """The tiny Qwen2.5-VL architecture trained on CPU (the embedded default)."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    vision_depth: int = 4
    vision_hidden: int = 128
    vision_heads: int = 4
    image_size: int = 256          # images are resized to at most this many pixels squared
    vocab_size: int = 2048
    intermediate: int = 0          # text MLP width; 0: 2 x hidden
    vision_intermediate: int = 0   # vision MLP width; 0: 2 x vision_hidden
    must: MustSettings = field(default_factory=MustSettings)


def _token_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        level_token_ids=level_token_ids(tokenizer),
        role_token_ids={role: ids(tok) for role, tok in ROLE_TOKENS.items()},
    )


def tiny_config(tokenizer, spec: TinySpec) -> CasIqaConfig:
    head_dim = spec.hidden // spec.heads
    # mrope splits head_dim/2 rotary frequencies over (time, height, width): must sum to head_dim/2
    t = head_dim // 8
    hw = (head_dim // 2 - t) // 2
    section = [head_dim // 2 - 2 * hw, hw, hw]
    ids = tokenizer.convert_tokens_to_ids
    return CasIqaConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=spec.intermediate or 2 * spec.hidden,
            num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
            rope_scaling={"type": "mrope", "mrope_section": section}, max_position_embeddings=4096,
            bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=spec.vision_depth, hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_intermediate or 2 * spec.vision_hidden,
            num_heads=spec.vision_heads, out_hidden_size=spec.hidden, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, window_size=112, fullatt_block_indexes=[spec.vision_depth // 2 - 1, spec.vision_depth - 1],
        ),
        must=spec.must.to_dict(), base_model=None, **_token_ids(tokenizer),
    )


def build_tiny(spec: TinySpec | None = None, seed: int = 0) -> tuple[CasIqaForConditionalGeneration, CasIqaProcessor]:
    """A randomly initialised tiny model and its processor (tokenizer trained on our text)."""
    spec = spec or TinySpec()
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(spec.vocab_size)
    model = CasIqaForConditionalGeneration(tiny_config(tokenizer, spec))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), make_processor(tokenizer, spec.image_size)


def from_base(model_id: str, must: MustSettings | None = None, image_size: int = 448, dtype=torch.bfloat16,
              **kwargs) -> tuple[CasIqaForConditionalGeneration, CasIqaProcessor]:
    """A pretrained Qwen2.5-VL (hub id or local path) with new MUST and heads. Only MUST weights
    may be missing; anything else missing or unexpected is an error."""
    from transformers import AutoTokenizer, Qwen2_5_VLConfig

    from casiqa.model.tokenizer import CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(model_id)
    new = [t for t in ROLE_TOKENS.values() if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new})
    tokenizer.chat_template = CHAT_TEMPLATE
    base = Qwen2_5_VLConfig.from_pretrained(model_id).to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        base.pop(key, None)
    config = CasIqaConfig(**base, must=(must or MustSettings()).to_dict(), base_model=model_id)
    config.level_token_ids = level_token_ids(tokenizer)
    config.role_token_ids = {r: tokenizer.convert_tokens_to_ids(t) for r, t in ROLE_TOKENS.items()}
    model, info = CasIqaForConditionalGeneration.from_pretrained(model_id, config=config, dtype=dtype,
                                                                 output_loading_info=True, **kwargs)
    _check(info, model_id, allowed_missing=("model.must.",))
    if new:
        model.resize_token_embeddings(len(tokenizer))
    return model, make_processor(tokenizer, image_size)


# Published Qwen2.5-VL architectures (their config.json), for `from_architecture`: sizes only, no weights.
_QWEN25_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                      hidden_act="silu", tokens_per_second=2)
ARCHITECTURES: dict[str, dict] = {
    "qwen2.5-vl-3b": dict(
        text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                  num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True, mrope_section=[16, 24, 24]),
        vision=dict(_QWEN25_VISION, out_hidden_size=2048)),
    "qwen2.5-vl-7b": dict(
        text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False, mrope_section=[16, 24, 24]),
        vision=dict(_QWEN25_VISION, out_hidden_size=3584)),
}


def from_architecture(name: str, must: MustSettings | None = None, image_size: int = 448, dtype=torch.bfloat16,
                      device: str | torch.device | None = None, seed: int = 0,
                      **kwargs) -> tuple[CasIqaForConditionalGeneration, CasIqaProcessor]:
    """A published architecture (ARCHITECTURES) with random weights and our small tokenizer: the
    same layers, parameter count and memory as the real model, for checking a recipe's memory and
    speed without downloading it. Its answers are noise. Built directly on `device` in `dtype`."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    arch = ARCHITECTURES[name]
    text = dict(arch["text"])
    section, tie = text.pop("mrope_section"), text.pop("tie_word_embeddings")
    tokenizer = train_tokenizer(2048)
    ids = tokenizer.convert_tokens_to_ids
    config = CasIqaConfig(
        text_config=dict(text, rope_scaling={"type": "mrope", "mrope_section": section}, max_position_embeddings=32768,
                         rms_norm_eps=1e-6, rope_theta=1e6, bos_token_id=None, eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(arch["vision"]), tie_word_embeddings=tie,
        must=(must or MustSettings()).to_dict(), base_model=f"random:{name}", **_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = CasIqaForConditionalGeneration._from_config(config, dtype=dtype, **kwargs)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, make_processor(tokenizer, image_size)


# weights a checkpoint may lack because it was saved before they existed; _init_weights gives them the
# value those checkpoints were trained with (the profile scorer's share: an even mixture)
INITIALISED_IF_MISSING = ("model.must.profile_scorer.share",)


def load(path: str | Path, dtype=None, device: str | None = None) -> tuple[CasIqaForConditionalGeneration, CasIqaProcessor]:
    """A CAS-IQA checkpoint saved by `save`: every weight must be there (but INITIALISED_IF_MISSING),
    nothing extra."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: no config.json; not a CAS-IQA model directory")
    model, info = CasIqaForConditionalGeneration.from_pretrained(path, dtype=dtype, output_loading_info=True)
    _check(info, str(path), allowed_missing=INITIALISED_IF_MISSING)
    processor = CasIqaProcessor.from_pretrained(path)
    if device:
        model = model.to(device)
    return model.eval(), processor


def save(model: CasIqaForConditionalGeneration, processor: CasIqaProcessor, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _check(info: dict, where: str, allowed_missing: tuple[str, ...] = ()) -> None:
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(allowed_missing)]
    unexpected = list(info.get("unexpected_keys", []))
    mismatched = [str(m) for m in info.get("mismatched_keys", [])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing weight(s), e.g. {', '.join(sorted(missing)[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weight(s), e.g. {', '.join(sorted(unexpected)[:3])}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[0]}")
    if problems:
        raise CheckpointError(f"{where}: checkpoint does not match the model: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    from casiqa.cli import parse_config

    @dataclass
    class Args:
        out: str = "models/tiny-untrained"
        seed: int = 0

    args, spec = parse_config((Args, TinySpecFlat), argv, description="Build a tiny untrained CAS-IQA model")
    model, processor = build_tiny(spec.to_spec(), seed=args.seed)
    save(model, processor, args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"saved a tiny untrained model ({n / 1e6:.2f} M parameters) to {args.out}")
    return 0


@dataclass
class TinySpecFlat:
    """TinySpec with MUST switches as flat fields, for the command line."""

    image_size: int = 256
    must: bool = True
    cross_attention: bool = True

    def to_spec(self) -> TinySpec:
        return TinySpec(image_size=self.image_size, must=MustSettings(enabled=self.must, cross_attention=self.cross_attention))


if __name__ == "__main__":
    sys.exit(main())
