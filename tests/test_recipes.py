"""Every shipped recipe parses; a published architecture builds with random weights and trains a
few LoRA steps through the recipe's own path (benchmarks/bench_train.py)."""

from pathlib import Path

import pytest
import torch

from casiqa.paths import ROOT

RECIPES = sorted((ROOT / "finetune" / "recipes").glob("*.yaml"))

# the 3B recipe's structure (LoRA on the LM, MUST and heads saved whole) on a model small enough for CI
MINI = dict(
    text=dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, tie_word_embeddings=True, mrope_section=[4, 6, 6]),
    vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1], hidden_act="silu",
                out_hidden_size=128))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses(recipe: Path):
    from trl import ModelConfig, SFTConfig, TrlParser

    from finetune.config import CasIqaArguments

    parser = TrlParser((CasIqaArguments, SFTConfig, ModelConfig))
    # bf16 off: the GPU recipes ask for it and transformers refuses it on a machine without one
    args, training, model = parser.parse_args_and_config(["--config", str(recipe), "--bf16", "false"])
    assert args.data and training.output_dir and model.model_name_or_path


def test_published_architectures_have_their_sizes():
    from casiqa.model.loading import ARCHITECTURES, from_architecture

    expected = {"qwen2.5-vl-3b": 3.75e9, "qwen2.5-vl-7b": 8.29e9}  # the released checkpoints, without MUST
    assert set(expected) <= set(ARCHITECTURES)
    for name, size in expected.items():
        model, _ = from_architecture(name, device="meta")
        must = sum(p.numel() for p in model.model.must.parameters())
        total = sum(p.numel() for p in model.parameters()) - must
        assert abs(total - size) / size < 0.01, (name, total)
        assert model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown architecture"):
        from_architecture("qwen9-vl-1t", device="meta")


@pytest.fixture
def mini_arch(monkeypatch):
    import casiqa.model.loading as loading

    monkeypatch.setitem(loading.ARCHITECTURES, "mini", MINI)
    return "random:mini"


@pytest.mark.slow
def test_gpu_recipe_trains_lora_steps_on_a_random_architecture(mini_arch, phantom, monkeypatch):
    from benchmarks.bench_train import measure

    monkeypatch.chdir(ROOT)
    result = measure(["--config", "finetune/recipes/qwen2.5-vl-3b.yaml", "--model_name_or_path", mini_arch,
                      "--data", str(phantom), "--image_size", "112", "--max_steps", "3", "--bf16", "false",
                      "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
                      "--dataloader_num_workers", "0"], skip=1)
    assert result["lora"] and result["gradient_checkpointing"] and result["steps_timed"] == 2
    assert 0 < result["trainable_m"] < result["parameters_m"]   # LoRA + MUST train, the base does not
    assert result["samples_per_step"] == 4 and result["samples_per_s"] > 0
    assert result["tokens_per_sample"] > 0 and torch.isfinite(torch.tensor(result["final_loss"]))


def test_a_gpu_recipe_on_a_cpu_machine_says_how_to_run_it(monkeypatch):
    from finetune.sft import prepare

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit, match="--bf16 false"):
        prepare(["--config", "finetune/recipes/qwen2.5-vl-3b.yaml"])


def test_the_training_bench_times_the_tiny_recipe(phantom, monkeypatch):
    """The bench skips stage 1 and what is built on it (the stage-1 heads' prompt scores, the
    profile scorer), so the tiny recipe, which uses both, runs there as documented: the CPU twin of
    the GPU test's bf16 steps (tests/test_gpu.py), which once failed on this alone."""
    from benchmarks.bench_train import measure

    monkeypatch.chdir(ROOT)
    result = measure(["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--bf16", "false",
                      "--image_size", "112", "--max_steps", "2", "--per_device_train_batch_size", "2",
                      "--dataloader_num_workers", "0"], skip=1)
    assert result["steps_timed"] == 1 and result["samples_per_step"] == 2
    assert 0 < result["trainable_m"] <= result["parameters_m"]
    assert torch.isfinite(torch.tensor(result["final_loss"]))
