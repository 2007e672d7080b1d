"""benchmarks.bench_profiles: stage 1p alone on the recipe's rows, and what it adds to a model's scores."""

import json

import pytest


def test_bench_profiles_trains_the_scorer_and_compares_it(phantom, tmp_path):
    from benchmarks.bench_profiles import main
    from finetune.data import load_rows

    out, against = tmp_path / "profiles.json", tmp_path / "results.jsonl"
    val = load_rows(str(phantom), "validation")
    # a stand-in evals.run results file of the validation split: a model that predicts the truth
    against.write_text("\n".join(json.dumps({"pred": {m: s["mos"] for m, s in r["scores"].items()},
                                             "truth": {m: s["mos"] for m, s in r["scores"].items()}}) for r in val))
    base = ["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--image_size", "112",
            "--profile_epochs", "2", "--cache", str(tmp_path / "pixels.pt")]
    assert main(base + ["--against", str(against), "--json_out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["final"]) == {"guidewire_visibility", "branch_discernibility"}
    assert len(result["history"]) == 2 and result["seconds"] > 0
    for fit in result["against"].values():
        assert fit["model_srcc"] == pytest.approx(1.0)       # the stand-in model is the truth
    for m, rows in result["validation_rows"].items():         # every validation row, in order
        assert len(rows["scorer"]) == len(val)
        assert rows["mos"] == pytest.approx([r["scores"][m]["mos"] for r in val], abs=1e-3)
    with pytest.raises(SystemExit, match="no profile scorer"):
        main(base + ["--profile_scores", "false"])
    # profiles from the images processed at twice the model's size: a cache of the other size is refused
    with pytest.raises(SystemExit, match="other settings"):
        main(base + ["--profile_px", "224"])
    fine = tmp_path / "fine.json"
    assert main(base[:-1] + [str(tmp_path / "pixels-224.pt"), "--profile_px", "224", "--profile_half_px", "24",
                             "--json_out", str(fine)]) == 0
    assert set(json.loads(fine.read_text())["final"]) == {"guidewire_visibility", "branch_discernibility"}
    with pytest.raises(SystemExit, match="odd size"):
        main(base + ["--profile_px", "224", "--profile_tophat", "8"])


def test_bench_profiles_scores_another_build_over_the_views(phantom, tmp_path):
    from benchmarks.bench_profiles import main
    from finetune.data import load_rows

    out, cache = tmp_path / "profiles.json", tmp_path / "check.pt"
    base = ["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--image_size", "112",
            "--profile_epochs", "2", "--profile_views", "2", "--cache", str(tmp_path / "pixels.pt")]
    check = ["--check_data", str(phantom), "--check_cache", str(cache)]
    assert main(base + check + ["--check_views", "8", "--json_out", str(out)]) == 0
    got = json.loads(out.read_text())["check"]
    rows = sum(len(load_rows(str(phantom), s)) for s in ("train", "validation", "test"))
    assert got["rows"] == rows and got["views"] == 8 and cache.is_file()
    for m in ("guidewire_visibility", "branch_discernibility"):
        assert -1.0 <= got[m]["srcc"] <= 1.0 and got[m]["se"] > 0
    other = base[:5] + ["96"] + base[6:-1] + [str(tmp_path / "pixels-96.pt")]
    with pytest.raises(SystemExit, match="rows of other settings"):      # the check cache holds 112 px rows
        main(other + check)
    with pytest.raises(SystemExit, match="--check_views must be 1 or 8"):
        main(base + check + ["--check_views", "3"])


def test_the_check_cache_is_refused_for_a_build_remade_at_the_same_path(phantom, tmp_path):
    import shutil

    from benchmarks.bench_profiles import main

    build, cache = tmp_path / "build", tmp_path / "check.pt"
    shutil.copytree(phantom, build)
    args = ["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--image_size", "112",
            "--profile_epochs", "1", "--cache", str(tmp_path / "pixels.pt"),
            "--check_data", str(build), "--check_cache", str(cache), "--check_views", "1"]
    assert main(args) == 0 and cache.is_file()
    state = build / "test" / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "_fingerprint": "0123456789abcdef"}))
    with pytest.raises(SystemExit, match="rows of other settings"):
        main(args)
