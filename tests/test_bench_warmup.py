"""benchmarks.bench_warmup: stage 1 of a recipe alone, with a pixel cache that is reused only
under the settings that made it."""

import json

import pytest

from casiqa.metrics import METRICS


def test_bench_warmup_runs_stage_one_and_guards_its_cache(phantom, tmp_path):
    from benchmarks.bench_warmup import main

    cache, out = tmp_path / "pixels.pt", tmp_path / "warmup.json"
    base = ["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--image_size", "112",
            "--pixel_warmup_epochs", "2", "--pixel_warmup_bf16", "false", "--pixel_compare", "3", "9",
            "--cache", str(cache)]
    assert main(base + ["--json_out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert cache.is_file() and len(result["history"]) == 2
    assert result["settings"]["pixel_compare"] == [3, 9] and result["train_rows"] > 0
    assert all(0 <= e["seconds"] and "val_guidewire_visibility_srcc" in e for e in result["history"])
    kinds = result["by_failure_kind"]  # the fit by failure kind, on validation and on the rows it trained on
    assert set(kinds) == {"validation", "train"} and set(kinds["train"]) == set(METRICS)
    assert sum(r["n"] for r in kinds["train"]["guidewire_visibility"].values()) == result["train_rows"]
    dense = result["dense_maps"]  # the dense head's maps against the target maps, both splits
    assert set(dense) == {"validation", "train"} and set(dense["validation"]) == set(METRICS)
    assert all(0.0 <= fit["clean_max"] <= 1.0 for fit in dense["train"].values() if fit["clean_max"] is not None)
    assert main(base + ["--pixel_width", "16", "--pixel_warmup_epochs", "0.5"]) == 0   # same cache, another stem
    with pytest.raises(SystemExit, match="other settings"):
        main(base[:-2] + ["--image_size", "224", "--cache", str(cache)])


def test_bench_warmup_refuses_a_cache_of_a_build_remade_at_the_same_path(phantom, tmp_path):
    import shutil

    from benchmarks.bench_warmup import main

    data, cache = tmp_path / "data", tmp_path / "pixels.pt"
    shutil.copytree(phantom, data)
    base = ["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(data), "--image_size", "112",
            "--pixel_warmup_epochs", "0.5", "--pixel_warmup_bf16", "false", "--cache", str(cache)]
    assert main(base) == 0 and main(base) == 0                       # the same build: the cache is read
    state = data / "train" / "state.json"                             # a rebuild gets another fingerprint
    state.write_text(json.dumps({**json.loads(state.read_text()), "_fingerprint": "0123456789abcdef"}))
    with pytest.raises(SystemExit, match="other settings"):
        main(base)


def test_a_cache_made_before_failures_were_kept_reads_them_from_the_data(phantom, tmp_path):
    import torch

    from benchmarks.bench_warmup import main

    cache, before, after = tmp_path / "pixels.pt", tmp_path / "a.json", tmp_path / "b.json"
    base = ["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--image_size", "112",
            "--pixel_warmup_epochs", "1", "--pixel_warmup_bf16", "false", "--cache", str(cache)]
    assert main(base + ["--json_out", str(before)]) == 0
    saved = torch.load(cache, weights_only=False)
    for split in ("train", "validation"):
        saved[split].failures = None          # as an older cache holds its rows
    torch.save(saved, cache)
    assert main(base + ["--json_out", str(after)]) == 0   # the failures now come from the data
    a, b = ({split: {m: {k: (r["n"], r["mean_truth"]) for k, r in t.items()} for m, t in kinds.items()}
             for split, kinds in json.loads(p.read_text())["by_failure_kind"].items()} for p in (before, after))
    assert a == b and a["validation"]["guidewire_visibility"]   # the same rows in the same groups


def test_seeds_share_one_cache_and_report_their_spread(phantom, tmp_path, capsys):
    from benchmarks.bench_warmup import main

    out = tmp_path / "seeds.json"
    base = ["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--image_size", "112",
            "--pixel_warmup_epochs", "1", "--pixel_warmup_bf16", "false", "--pixel_width", "16"]
    assert main(base + ["--seeds", "0", "1", "--json_out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["seeds"] == [0, 1] and len(result["runs"]) == 2
    assert result["runs"][0]["history"][0]["loss"] != result["runs"][1]["history"][0]["loss"]  # two runs, not one twice
    assert capsys.readouterr().err.count("pixel cache: ") == 1   # the second seed read the first one's cache
    for m in METRICS:
        finals = [r["history"][-1][f"val_{m}_srcc"] for r in result["runs"]]
        summary = result["summary"][m]
        assert summary["min"] == min(finals) and summary["max"] == max(finals)
        assert summary["mean"] == pytest.approx(sum(finals) / 2, abs=1e-4)
    one = tmp_path / "one.json"   # --seed alone still reaches the run (no abbreviation of --seeds)
    assert main(base + ["--seed", "1", "--json_out", str(one)]) == 0
    assert json.loads(one.read_text())["history"][0]["loss"] == result["runs"][1]["history"][0]["loss"]
    with pytest.raises(SystemExit, match="either --seed or --seeds"):
        main(base + ["--seeds", "0", "1", "--seed", "3"])


def test_fine_top_hat_planes_are_cached_apart_and_keep_the_wire_sharper(phantom, tmp_path):
    """--fine_tophat_px: the top-hat planes come from the images processed at a finer size, max-pooled
    onto the model's grid (same shape as the plain planes, a wire's peak kept rather than averaged
    with its background); a cache made so is never reused for plain planes, nor the other way."""
    import torch

    from benchmarks.bench_warmup import main

    plain, fine, out = tmp_path / "plain.pt", tmp_path / "fine.pt", tmp_path / "fine.json"
    base = ["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--image_size", "112",
            "--pixel_warmup_epochs", "1", "--pixel_warmup_bf16", "false", "--pixel_width", "16"]
    assert main(base + ["--cache", str(plain)]) == 0
    assert main(base + ["--cache", str(fine), "--fine_tophat_px", "224", "--json_out", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["fine_tophat"] == {"px": 224, "size": 9}
    a, b = (torch.load(p, weights_only=False)["train"] for p in (plain, fine))
    assert [t.shape for t in a.tophat] == [t.shape for t in b.tophat]
    live = 1  # the live frame's top-hat plane: its wire and catheter
    peak = [torch.stack([t[live].float().amax() for t in rows.tophat]).mean().item() for rows in (a, b)]
    assert peak[1] > peak[0], peak
    with pytest.raises(SystemExit, match="other settings"):
        main(base + ["--cache", str(fine)])
    with pytest.raises(SystemExit, match="odd size"):
        main(base + ["--fine_tophat_px", "224", "--fine_tophat_size", "8"])
