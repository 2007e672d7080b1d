"""python -m finetune.sft on a tiny model: weights move, checkpoints resume, bad data is named."""

import json

import pytest
import torch
from safetensors.torch import load_file

SMALL = ["--tiny_hidden", "64", "--tiny_layers", "1", "--tiny_vision_depth", "2", "--tiny_vision_hidden", "32",
         "--image_size", "112", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
         "--logging_steps", "1", "--eval_steps", "100", "--warmup_steps", "0", "--head_warmup_steps", "0",
         "--test_at_end", "false", "--pixel_warmup_epochs", "0", "--lm_warmup_steps", "0", "--prompt_scores", "mos",
         "--profile_scores", "false",
         "--dataloader_num_workers", "0"]


def _sft(*args):
    from finetune.sft import main

    return main(["--config", "finetune/recipes/tiny-cpu.yaml", *SMALL, *map(str, args)])


def test_lora_steps_change_adapter_must_and_heads(phantom, tmp_path, monkeypatch):
    from casiqa.paths import ROOT

    monkeypatch.chdir(ROOT)
    torch.manual_seed(0)
    out = tmp_path / "lora"
    assert _sft("--data", phantom, "--output_dir", out, "--max_steps", 3, "--use_peft", "true", "--lora_r", 4,
                "--learning_rate", 5e-3, "--save_steps", 3) == 0
    ckpt = load_file(out / "checkpoint-3" / "adapter_model.safetensors")
    lora_b = [v for k, v in ckpt.items() if "lora_B" in k]
    assert lora_b and all("language_model" in k for k in ckpt if "lora_" in k)
    assert any(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: nonzero means it trained
    # MUST (with the heads) is saved whole with the adapter, and it moved away from its initialisation
    from casiqa.model.loading import TinySpec, build_tiny

    fresh, _ = build_tiny(TinySpec(hidden=64, layers=1, vision_depth=2, vision_hidden=32, image_size=112), seed=0)
    init = {k: v for k, v in fresh.state_dict().items() if ".must." in k}
    saved = {k: v for k, v in ckpt.items() if ".must." in k}
    head = [k for k in saved if "branches.0.head.3.weight" in k]
    router = [k for k in saved if "router.proj.weight" in k]
    assert head and router
    for key in head + router:
        original = init["model.must." + key.split(".must.", 1)[1].replace("modules_to_save.default.", "")]
        assert not torch.allclose(saved[key], original)
    # the merged export loads strictly and scores
    from casiqa.model.loading import load

    model, _ = load(out)
    assert not hasattr(model, "peft_config")


def test_resumed_run_continues_from_its_step(phantom, tmp_path, monkeypatch):
    from casiqa.paths import ROOT

    monkeypatch.chdir(ROOT)
    out = tmp_path / "full"
    warm = ["--head_warmup_steps", 3]  # steps 1-3 train the heads without the LM, step 4 both
    assert _sft("--data", phantom, "--output_dir", out, "--max_steps", 2, "--save_steps", 2, *warm) == 0
    assert _sft("--data", phantom, "--output_dir", out, "--max_steps", 4, "--save_steps", 2, *warm,
                "--resume_from_checkpoint", out / "checkpoint-2") == 0
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    logs = [e for e in state["log_history"] if "loss" in e]
    assert state["global_step"] == 4 and [e["step"] for e in logs] == [1, 2, 3, 4]  # 1-2 first run, 3-4 resumed
    assert "lm_loss" not in logs[2] and "lm_loss" in logs[3]


def test_pixel_warmup_runs_before_sft_and_is_reused(phantom, tmp_path, monkeypatch, capsys):
    from casiqa.paths import ROOT

    monkeypatch.chdir(ROOT)
    out = tmp_path / "warm"
    stage1 = ["--pixel_warmup_epochs", 2, "--pixel_warmup_batch_size", 8, "--pixel_warmup_evidence_weight", 1.0]
    heads = ["--prompt_scores", "heads"]
    assert _sft("--data", phantom, "--output_dir", out, "--max_steps", 1, "--save_steps", 1, *stage1, *heads,
                "--lm_warmup_steps", 2, "--lm_warmup_batch_size", 4) == 0
    assert [e["lm_warmup_step"] for e in json.loads((out / "lm-warmup" / "history.json").read_text())] == [1, 2]
    # prompt_scores: heads keeps the stage-1 heads' score of every training row beside its weights
    from finetune.data import load_rows

    shown = json.loads((out / "pixel-warmup" / "train-scores.json").read_text())
    assert set(shown) == {str(i) for i in load_rows(phantom, "train")["id"]}
    assert all(len(v) == 3 and all(1.0 <= x <= 5.0 for x in v) for v in shown.values())
    assert len({tuple(v) for v in shown.values()}) > 1
    history = json.loads((out / "pixel-warmup" / "history.json").read_text())
    assert [round(e["epoch"]) for e in history] == [1, 2]
    assert all(f"val_{m}_srcc" in history[0] for m in ("guidewire_visibility", "artifact_interference"))
    warmed = load_file(out / "pixel-warmup" / "must.safetensors")
    final = load_file(out / "checkpoint-1" / "model.safetensors")
    # the pixel path is frozen in the SFT stage (the recipe's freeze_pixel_path): SFT left it as warmed
    for key in ("pixels.stem.0.weight", "pixels.stem.1.running_mean"):
        assert torch.equal(warmed[key], final["model.must." + key])
    capsys.readouterr()
    assert _sft("--data", phantom, "--output_dir", out, "--max_steps", 1, "--save_steps", 1, *stage1, *heads) == 0
    printed = capsys.readouterr().out
    assert "pixel warm-up: reusing" in printed and "prompt scores: the stage-1 heads' scores from" in printed
    assert json.loads((out / "pixel-warmup" / "settings.json").read_text())["pixel_warmup_epochs"] == 2
    # a changed recipe must not silently reuse a stage 1 trained under other settings
    with pytest.raises(SystemExit, match="pixel_warmup_lr"):
        _sft("--data", phantom, "--output_dir", out, "--max_steps", 1, *stage1, "--pixel_warmup_lr", 1e-4)
    # settings kept before a field existed count as that field's default, not as a change
    kept = out / "pixel-warmup" / "settings.json"
    old = json.loads(kept.read_text())
    kept.write_text(json.dumps({k: v for k, v in old.items() if k != "pixel_warmup_batch_size"}))
    with pytest.raises(SystemExit, match="pixel_warmup_batch_size: 32 -> 8"):
        _sft("--data", phantom, "--output_dir", out, "--max_steps", 1, *stage1)
    # the same data path holding other data (rebuilt in place) is a change too
    kept.write_text(json.dumps({**old, "data_fingerprint": "train:0000;validation:0000"}))
    with pytest.raises(SystemExit, match="data_fingerprint"):
        _sft("--data", phantom, "--output_dir", out, "--max_steps", 1, *stage1)


def test_data_fingerprint_follows_the_content(tmp_path):
    from casiqa.data.rows import data_fingerprint

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "annotations.jsonl").write_text('{"id": "a"}\n')
    before = data_fingerprint(folder)
    (folder / "annotations.jsonl").write_text('{"id": "b"}\n')
    assert before.startswith("folder:") and data_fingerprint(folder) != before
    hf = tmp_path / "hf"
    for split, fp in (("train", "aa"), ("test", "bb")):
        (hf / split).mkdir(parents=True)
        (hf / split / "state.json").write_text(json.dumps({"_fingerprint": fp}))
    (hf / "dataset_dict.json").write_text("{}")
    assert data_fingerprint(hf) == "test:bb;train:aa" and data_fingerprint(tmp_path / "nothing") == ""


def test_a_dataset_without_scores_is_named(tmp_path, monkeypatch):
    from casiqa.paths import ROOT
    from finetune.data import DatasetFieldError

    monkeypatch.chdir(ROOT)
    (tmp_path / "images").mkdir()
    row = {"id": "a", "synthetic": "images/a.png", "split": "train"}
    (tmp_path / "annotations.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    from casiqa.data.folder import AnnotationError

    with pytest.raises((DatasetFieldError, AnnotationError), match="scores"):
        _sft("--data", tmp_path, "--output_dir", tmp_path / "o", "--max_steps", 1)


def test_recipe_fields_are_checked():
    from finetune.config import CasIqaArguments

    with pytest.raises(ValueError, match="guidewire_visibility"):
        CasIqaArguments(pixel_warmup_metric_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="not all 0"):
        CasIqaArguments(pixel_warmup_metric_weights=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="aux_drop"):
        CasIqaArguments(aux_drop=1.5)
    assert CasIqaArguments(pixel_warmup_metric_weights=[2.0, 1.0, 1.0]).pixel_warmup_metric_weights == [2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="needs pixel_dense"):
        CasIqaArguments(pixel_warmup_dense_weight=1.0, pixel_dense=False)
    with pytest.raises(ValueError, match="pool must be"):
        CasIqaArguments(pool="max")
    with pytest.raises(ValueError, match="needs pixel_tophat"):
        CasIqaArguments(pixel_compare=[3, 9])
    for sizes in ([4], [3, 3], [0]):
        with pytest.raises(ValueError, match="distinct, odd"):
            CasIqaArguments(pixel_tophat=5, pixel_compare=sizes)
    with pytest.raises(ValueError, match="pixel_pool must be one of max, max"):
        CasIqaArguments(pixel_pool="mean")
    with pytest.raises(ValueError, match="dense_damaged_weight must be > 0"):
        CasIqaArguments(pixel_warmup_dense_damaged_weight=0.0)
    with pytest.raises(ValueError, match="score_weight must be >= 0"):
        CasIqaArguments(pixel_warmup_score_weight=-1.0)
    with pytest.raises(ValueError, match="pass --findings false too"):
        CasIqaArguments(must=False, findings=True)
    with pytest.raises(ValueError, match="findings loss weights must be >= 0"):
        CasIqaArguments(findings_loss_weight=-1.0)
    with pytest.raises(ValueError, match="prompt_scores must be mos or heads"):
        CasIqaArguments(prompt_scores="truth")
    with pytest.raises(ValueError, match="pass --prompt_scores mos too"):
        CasIqaArguments(prompt_scores="heads", pixel_warmup_epochs=0)


def test_a_resumed_run_without_the_heads_scores_is_refused(tmp_path):
    """The model is not loaded from its checkpoint when the prompt scores are needed, so a resumed
    run must find them beside stage 1's weights rather than score with untrained heads."""
    from types import SimpleNamespace

    from finetune.sft import heads_scores

    args, training_args = SimpleNamespace(data="d"), SimpleNamespace(output_dir=str(tmp_path))
    with pytest.raises(SystemExit, match="cannot recompute"):
        heads_scores(None, None, args, training_args, [{"id": "a"}, {"id": "b"}], resuming=True)
    with pytest.raises(SystemExit, match="ids repeat"):
        heads_scores(None, None, args, training_args, [{"id": "a"}, {"id": "a"}])
    (tmp_path / "pixel-warmup").mkdir()
    (tmp_path / "pixel-warmup" / "train-scores.json").write_text(json.dumps({"a": [1, 2, 3], "b": [4, 5, 5], "c": [1, 1, 1]}))
    assert heads_scores(None, None, args, training_args, [{"id": "a"}, {"id": "b"}], resuming=True) == \
        {"a": [1, 2, 3], "b": [4, 5, 5]}


def test_findings_without_failure_records_are_refused():
    from casiqa.data.rows import DatasetFieldError
    from finetune.sft import check_failure_records

    rows = [{"id": "a", "scores": {}, "failures": None}, {"id": "b", "scores": {}}]
    with pytest.raises(DatasetFieldError, match="pass --findings false"):
        check_failure_records(rows, "my-folder")
    check_failure_records(rows + [{"id": "c", "scores": {}, "failures": []}], "my-folder")   # a clean record counts
