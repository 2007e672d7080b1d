"""Starting from a pretrained Qwen2.5-VL (a hub id or a local path): `from_base` keeps every base
weight, adds MUST and the role tokens, and `finetune.sft` trains it with LoRA. The base here is a
small random Qwen2.5-VL saved the way the hub stores one (no download)."""

import pytest
import torch

from casiqa.paths import ROOT


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from casiqa.model.tokenizer import ROLE_TOKENS, SPECIAL_TOKENS, train_tokenizer

    # a base tokenizer knows ChatML and the vision tokens, not CAS-IQA's role tokens
    tokenizer = train_tokenizer(2048, special_tokens=[t for t in SPECIAL_TOKENS if t not in ROLE_TOKENS.values()])
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[1]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("qwen-base")
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_from_base_keeps_the_base_weights_and_adds_must_and_role_tokens(base_dir):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from casiqa.model.loading import from_base
    from casiqa.model.tokenizer import ROLE_TOKENS

    before = len(AutoTokenizer.from_pretrained(base_dir))
    model, processor = from_base(str(base_dir), image_size=112, dtype=torch.float32)
    tokenizer = processor.tokenizer
    assert len(tokenizer) == before + len(ROLE_TOKENS)
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    assert model.config.base_model == str(base_dir)
    assert model.config.role_token_ids == {r: tokenizer.convert_tokens_to_ids(t) for r, t in ROLE_TOKENS.items()}
    # the base as transformers loads it (the hub layout's keys mapped onto the modules' names)
    saved = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32).state_dict()
    ours = model.state_dict()
    assert any(k.startswith("model.must.") for k in ours)
    for key, value in saved.items():
        if "embed_tokens" in key or key == "lm_head.weight":  # resized: the old rows are kept
            assert torch.equal(ours[key][: value.shape[0]], value), key
        else:
            assert torch.equal(ours[key], value), key


def test_a_base_missing_a_weight_is_refused(base_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from casiqa.model.loading import CheckpointError, from_base

    broken = tmp_path / "broken"
    shutil.copytree(base_dir, broken)
    weights = load_file(broken / "model.safetensors")
    weights.pop(next(k for k in weights if "layers.0.mlp.up_proj" in k))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing"):
        from_base(str(broken), image_size=112, dtype=torch.float32)


@pytest.mark.slow
def test_sft_with_lora_from_a_base_model(base_dir, phantom, tmp_path, monkeypatch):
    from casiqa.model.loading import load
    from finetune.sft import main

    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    assert main(["--config", "finetune/recipes/qwen2.5-vl-3b.yaml", "--model_name_or_path", str(base_dir),
                 "--data", str(phantom), "--output_dir", str(out), "--image_size", "112", "--bf16", "false",
                 "--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                 "--eval_strategy", "no", "--save_strategy", "no", "--test_at_end", "false",
                 "--dataloader_num_workers", "0", "--eval_max_samples", "4"]) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    model, _ = load(out)  # the merged export loads strictly
    assert model.config.base_model == str(base_dir)
