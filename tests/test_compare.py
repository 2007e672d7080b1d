"""evals.compare --paired: two runs on the same images, the SRCC difference with a paired interval."""

import json

import numpy as np
import pytest

from casiqa.metrics import METRICS


def _run(folder, ids, pred, truth, tail: str = ""):
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": i, "pred": {m: float(p) for m in METRICS}, "truth": {m: float(t) for m in METRICS}})
             for i, p, t in zip(ids, pred, truth, strict=True)]
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n" + tail)
    return str(folder)


def test_paired_difference_measures_the_difference_itself():
    from evals.compare import paired_difference

    rng = np.random.default_rng(0)
    truth = rng.uniform(1, 5, 300)
    a = truth + rng.normal(0, 1.0, 300)
    same = paired_difference(a, a.copy(), truth, n_boot=200)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0
    better = paired_difference(a, truth + rng.normal(0, 0.3, 300), truth, n_boot=200)
    assert better["diff"] > 0.1 and 0 < better["lo"] < better["diff"] < better["hi"]
    # a small, real gain: the paired interval excludes 0 where each run's own interval would overlap the other's
    slight = paired_difference(a, a + 0.2 * (truth - a), truth, n_boot=200)
    assert 0 < slight["lo"] and slight["diff"] < 0.1


def test_paired_table_pools_splits_and_refuses_other_images(tmp_path, capsys):
    from evals.compare import main

    rng = np.random.default_rng(1)
    truth = rng.uniform(1, 5, 40)
    ids = [f"r{i}" for i in range(40)]
    a = [_run(tmp_path / f"a-{s}", ids[k::2], (truth + rng.normal(0, 1, 40))[k::2], truth[k::2])
         for k, s in enumerate(("val", "test"))]
    b = [_run(tmp_path / f"b-{s}", ids[k::2], truth[k::2], truth[k::2], tail='{"id": "r9') for k, s in enumerate(("val", "test"))]
    assert main(["--paired", "+".join(a), "+".join(b)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("40 rows scored by every run") and "(+" in out      # b is the truth: it ranks better
    other = _run(tmp_path / "other", ids, truth + 1.0, truth + 1.0)
    with pytest.raises(SystemExit, match="other true scores"):
        main(["--paired", "+".join(a), other])
    with pytest.raises(SystemExit, match="share 0 scored rows"):
        main(["--paired", a[0], a[1].replace("a-test", "b-test")])
    with pytest.raises(SystemExit, match="appears twice"):
        main(["--paired", f"{a[0]}+{a[0]}", b[0]])
    with pytest.raises(SystemExit, match="no such file"):
        main(["--paired", a[0], str(tmp_path / "missing")])
    assert main(["--paired", a[0]]) == 2
