"""Eval runs: standard statistics, resumable results, invalid outputs counted, the full command."""

import json

import numpy as np
import pytest
from scipy import stats

from casiqa.metrics import METRICS
from casiqa.stats import agreement, fit_logistic, logistic4, plcc
from evals.results import read_done
from evals.run import EvalConfig, evaluate_model
from evals.scoring import bootstrap_ci, confusion, level_accuracy


def test_statistics_match_scipy():
    rng = np.random.default_rng(0)
    truth = rng.uniform(1, 5, 200)
    pred = truth + rng.normal(0, 0.5, 200)
    a = agreement(pred, truth)
    assert a["srcc"] == pytest.approx(stats.spearmanr(pred, truth).statistic)
    assert a["krcc"] == pytest.approx(stats.kendalltau(pred, truth).statistic)
    assert plcc(pred, truth, fit=False) == pytest.approx(stats.pearsonr(pred, truth).statistic)
    assert a["plcc"] >= plcc(pred, truth, fit=False) - 1e-6  # the logistic map can only help the fit
    assert bootstrap_ci(pred, truth, 200)["srcc"][0] < a["srcc"] < bootstrap_ci(pred, truth, 200)["srcc"][1]


def test_logistic_fit_recovers_a_synthetic_curve():
    x = np.linspace(-3, 3, 300)
    true = (4.0, 1.0, 0.5, 0.7)
    y = logistic4(x, *true) + np.random.default_rng(1).normal(0, 0.01, x.size)
    b1, b2, b3, b4 = fit_logistic(x, y)
    assert (b1, b2, b3, abs(b4)) == pytest.approx(true, abs=0.05)
    assert plcc(x, y) > 0.999 > plcc(x, y, fit=False)


def test_levels_accuracy_and_confusion():
    pred, truth = np.array([1.2, 2.6, 4.9, 3.4]), np.array([1.0, 3.0, 5.0, 2.0])
    assert level_accuracy(pred, truth) == 0.75
    c = np.array(confusion(pred, truth))
    assert c.sum() == 4 and c[1, 2] == 1 and np.trace(c) == 3


class FakeReport:
    def __init__(self, text):
        self.text = text

    def model_dump_json(self):
        return self.text


class FakeAssessor:
    """Returns a valid report, or invalid JSON for ids in `bad`, and counts what it assessed."""

    def __init__(self, bad=(), fail_after=None):
        self.bad, self.fail_after, self.seen = set(bad), fail_after, []

    def assess(self, inputs, generate=True):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt  # the run is killed
        out = []
        for inp in inputs:
            self.seen.append(inp.name)
            m = {"score": 3.2, "level": "fair", "confidence": 0.5, "explanation": "no artefacts", "evidence": []}
            report = {"metrics": {k: m for k in METRICS}, "model_id": "fake"}
            if inp.name in self.bad:
                report["metrics"]["guidewire_visibility"] = dict(m, level="excellent")  # contradicts its score
            out.append(FakeReport(json.dumps(report)))
        return out


def _rows(n):
    img = np.full((32, 32), 0.5, np.float32)
    return [{"id": f"r{i}", "synthetic": _PIL(img), "scores": {m: {"mos": 1 + (i % 5)} for m in METRICS}} for i in range(n)]


def _PIL(a):
    from PIL import Image

    return Image.fromarray((a * 255).astype(np.uint8))


def test_by_failure_kind_separates_what_is_read_from_what_is_missed():
    from evals.scoring import by_failure_kind

    g, b = METRICS[0], METRICS[1]
    sev = np.linspace(0.05, 1.0, 10)
    failures = [[{"metric": g, "kind": "fade", "severity": s}] for s in sev]           # read: score falls
    failures += [[{"metric": g, "kind": "gaps", "severity": s}] for s in sev]          # missed: score flat
    failures += [[], [{"metric": g, "kind": "fade", "severity": 0.5}, {"metric": g, "kind": "gaps", "severity": 0.5}],
                 None]
    score = np.concatenate([5 - 4 * sev, 3 + 0.01 * np.sin(np.arange(10)), [4.8, 2.0, 3.0]])
    pred = np.stack([score, np.full(23, 4.0), np.full(23, 4.0)], 1)
    truth = np.stack([np.concatenate([5 - 4 * sev, 5 - 4 * sev, [5.0, 1.5, 3.0]]), np.full(23, 5.0), np.full(23, 5.0)], 1)
    out = by_failure_kind(failures, pred, truth)
    assert list(out[g]) == ["fade", "gaps", "none", "several"]            # kinds first, then none, several
    assert out[g]["fade"]["srcc_severity"] == pytest.approx(-1.0) and out[g]["fade"]["mae"] == 0.0
    assert abs(out[g]["gaps"]["srcc_severity"]) < 0.7 and out[g]["gaps"]["mae"] > 0.5
    assert out[g]["none"] == {"n": 1, "mean_pred": 4.8, "mean_truth": 5.0, "mae": 0.2}
    assert out[g]["several"]["n"] == 1 and "srcc_severity" not in out[g]["several"]
    # reading the missed kind right is worth more than the kind already read: its bound is near 1
    assert out[g]["gaps"]["srcc_if_right"] > 0.95 > out[g]["fade"]["srcc_if_right"]
    assert "srcc_if_right" not in out[g]["none"] and "srcc_if_right" not in out[g]["several"]
    assert out[b] == {"none": {"n": 22, "mean_pred": 4.0, "mean_truth": 5.0, "mae": 1.0}}   # the unrecorded row left out


def test_dense_map_fit_measures_a_map_against_a_perfect_one():
    from evals.scoring import dense_map_fit

    rng = np.random.default_rng(0)
    n, h = 12, 6
    sev = np.linspace(0.1, 1.0, n - 2)
    maps = np.zeros((n, len(METRICS), h, h), np.float32)
    for i, s in enumerate(sev):
        maps[i, :, i % h, :] = s                      # a damaged row of cells, its severity
    truth = np.concatenate([5 - 4 * sev, [5.0, 5.0]])[:, None].repeat(len(METRICS), 1)   # two clean rows
    perfect = dense_map_fit(maps, maps, truth)[METRICS[0]]
    assert perfect == {"pred_max_srcc": 1.0, "true_max_srcc": 1.0, "damaged_srcc": 1.0, "clean_max": 0.0}
    # where, not how bad: every damaged cell at 0.5, faint noise elsewhere
    where = np.where(maps > 0, 0.5, 0.01 * rng.random(maps.shape))
    got = dense_map_fit(where, maps, truth)[METRICS[0]]
    assert got["true_max_srcc"] == 1.0 and got["damaged_srcc"] is None and 0 < got["clean_max"] <= 0.01
    assert got["pred_max_srcc"] < 0.7   # the damaged rows tie at 0.5: the max tells clean from damaged, no more
    flat = dense_map_fit(np.full(maps.shape, 0.3), maps, truth)[METRICS[0]]
    assert flat["pred_max_srcc"] is None and flat["damaged_srcc"] is None and flat["clean_max"] == 0.3


def test_resume_after_interruption_loses_and_duplicates_nothing(tmp_path):
    rows, cfg = _rows(10), EvalConfig(batch_size=3, generate=False)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(FakeAssessor(fail_after=6), rows, cfg, tmp_path)
    path = tmp_path / "results.jsonl"
    with path.open("a") as fh:
        fh.write('{"id": "r9", "cut')  # a line cut off mid-write by the kill
    assert sorted(read_done(path)) == ["r0", "r1", "r2", "r3", "r4", "r5"]
    again = FakeAssessor()
    done = evaluate_model(again, rows, cfg, tmp_path)
    assert again.seen == ["r6", "r7", "r8", "r9"]
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(f"r{i}" for i in range(10)) and len(done) == 10


def test_an_invalid_output_is_counted_not_fatal(tmp_path):
    done = evaluate_model(FakeAssessor(bad={"r2"}), _rows(5), EvalConfig(batch_size=2, generate=False), tmp_path)
    assert [done[f"r{i}"]["valid"] for i in range(5)] == [True, True, False, True, True]
    assert "contradicts score" in done["r2"]["error"] and done["r2"]["pred"] is None


def test_eval_command_end_to_end(tmp_path, tiny_dir):
    from casiqa.phantom.build import BuildConfig, build
    from casiqa.phantom.config import PhantomConfig
    from evals.compare import main as compare
    from evals.run import main

    data = tmp_path / "data"
    build(PhantomConfig(size=128), BuildConfig(out=str(data), n=45, seed=9, workers=1), progress=False)
    out = tmp_path / "run"
    args = ["--model", str(tiny_dir), "--data", str(data), "--out", str(out), "--generate", "false",
            "--bootstrap", "50", "--baselines", "brisque", "--ablations", f"same={tiny_dir}"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    from casiqa.data.rows import load_rows

    n_test = len(load_rows(data, "test"))
    assert metrics["schema_valid_rate"] == 1.0 and metrics["n_rows"] == n_test
    expected = {"CAS-IQA", "CAS-IQA, no reference (heads)", "ablation same (heads)", "BRISQUE + kernel ridge"}
    assert expected <= set(metrics["systems"])
    assert (out / "scatter.png").is_file() and "| system |" in (out / "report.md").read_text()
    kinds = metrics["by_failure_kind"]
    assert set(kinds) == set(METRICS) and sum(r["n"] for r in kinds[METRICS[0]].values()) == n_test
    assert "## CAS-IQA by failure kind" in (out / "report.md").read_text()
    # the tiny test model has no dense head: its boxes come from the routing maps and carry no damage,
    # so nothing is measured for it (a model with damage maps: test_damage_separation_...)
    assert "evidence_boxes" in metrics and "evidence_damage" not in metrics
    assert "## Does the evidence boxes' damage tell a failure from none?" not in (out / "report.md").read_text()
    assert main(args) == 0  # a rerun resumes: nothing left to assess
    assert len((out / "results.jsonl").read_text().splitlines()) == n_test
    assert compare([str(out)]) == 0
    # the same --out with another model's weights is refused, not mixed into the finished run
    other = tmp_path / "other-model"
    import shutil

    shutil.copytree(tiny_dir, other)
    with pytest.raises(SystemExit, match="holds a run with other model"):
        main([*args[:1], str(other), *args[2:]])

    from evals.overlay import main as overlay

    picture = tmp_path / "evidence.png"
    assert overlay(["--model", str(tiny_dir), "--data", str(data), "--n", "3", "--out", str(picture)]) == 0
    assert picture.stat().st_size > 10_000


def test_a_bad_ablation_is_refused_before_the_run(tmp_path):
    from evals.run import main

    with pytest.raises(SystemExit, match="expected name=model_dir"):
        main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--ablations", f"x={tmp_path / 'missing'}"])
    assert not (tmp_path / "o").exists()  # nothing was started


def test_a_model_with_another_config_is_another_model(tmp_path):
    """A setting that changes the scores without touching the weights (dihedral_scores) must not let
    a run resume, nor cached ablation scores be reused."""
    from evals.run import weights_fingerprint

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text('{"must": {"dihedral_scores": false}}')
    before = weights_fingerprint(str(tmp_path))
    (tmp_path / "config.json").write_text('{"must": {"dihedral_scores": true}}')
    assert weights_fingerprint(str(tmp_path)) != before


def test_explanation_kinds_counts_what_the_explanations_name():
    from evals.scoring import explanation_kinds

    gw, br = "guidewire_visibility", "branch_discernibility"
    fails = [[{"metric": gw, "kind": "wire_gaps", "severity": 0.8}, {"metric": gw, "kind": "wire_fade", "severity": 0.3}],
             [{"metric": gw, "kind": "wire_displacement", "severity": 0.5}],
             [],
             None]                                                       # no records: left out
    expl = [{gw: "mid wire moderately broken by 2 gap(s)", br: "vessel tree complete"},
            {gw: "guidewire slightly faded", br: "second diagonal missing"},  # wrong kind; a clean row named
            {gw: "guidewire sharp and continuous; catheter visible", br: "vessel tree complete"},
            {gw: "anything", br: "anything"}]
    out = explanation_kinds(fails, expl)
    g = out[gw]
    assert g["n_failed"] == 2 and g["worst_named"] == 0.5             # the gaps named, the displacement not
    assert g["kind_recall"] == 0.25 and g["kind_precision"] == 0.5    # (1/2 + 0) / 2; 1 right of 2 named
    assert g["n_clean"] == 1 and g["clean_right"] == 1.0
    b = out[br]
    assert b["n_failed"] == 0 and b["worst_named"] is None and b["n_clean"] == 3 and b["clean_right"] == round(2 / 3, 4)
    assert "low_silent" not in g
    # given the levels: of the rows scored fair or worse (all four rows count), those naming nothing
    levels = [{gw: "poor", br: "fair"}, {gw: "fair", br: "poor"}, {gw: "fair", br: "excellent"}, {gw: "good", br: "bad"}]
    out = explanation_kinds(fails, expl, levels)
    assert out[gw]["n_low"] == 3 and out[gw]["low_silent"] == round(1 / 3, 4)   # row 3: intact under "fair"
    assert out[br]["n_low"] == 3 and out[br]["low_silent"] == round(2 / 3, 4)    # rows 1 and 4 name no kind
    assert "location_stated" not in out[gw]
    # given the rows' true facts: whether the explanations say where, and rightly
    facts = [{gw: ["wire gaps: mid wire in the LAD severely broken by 4 gap(s)"], br: ["vessel tree complete"]},
             {gw: ["wire displacement: guidewire in the RCA moderately displaced"], br: ["vessel tree complete"]},
             {gw: ["guidewire sharp and continuous into the LAD"], br: ["vessel tree complete"]},
             None]                                                        # no facts: left out
    expl[0][gw] = "wire gaps: guidewire in the LAD broken by gaps"         # the right vessel
    expl[1][br] = "second diagonal missing"                                # a vessel the row's facts do not name
    out = explanation_kinds(fails, expl, levels, facts)
    assert out[gw]["location_stated"] == round(1 / 3, 4) and out[gw]["location_wrong"] == 0.0
    assert out[br]["location_stated"] == round(1 / 3, 4) and out[br]["location_wrong"] == 1.0
    assert out["artifact_interference"]["location_stated"] is None   # no row explains it here


def test_the_report_says_whether_explanations_name_the_failures():
    from evals.report import explanation_table

    named = {m: {"n_failed": 10, "worst_named": 0.2, "kind_recall": 0.15, "kind_precision": None, "n_clean": 3,
                 "clean_right": 1.0} for m in METRICS}
    lines = explanation_table(named)
    assert lines[0] == "## Do the explanations name the failures?"
    row = next(line for line in lines if line.startswith(f"| {METRICS[0]} |"))
    assert row == f"| {METRICS[0]} | 10 | 20% | 15% |  | 3 | 100% |  |  |  |  |"
    named[METRICS[0]].update(n_low=7, low_silent=0.25)
    row = next(line for line in explanation_table(named) if line.startswith(f"| {METRICS[0]} |"))
    assert row.endswith("| 3 | 100% | 7 | 25% |  |  |")
    named[METRICS[0]].update(location_stated=0.5, location_wrong=0.8)
    row = next(line for line in explanation_table(named) if line.startswith(f"| {METRICS[0]} |"))
    assert row.endswith("| 7 | 25% | 50% | 80% |")


def test_evidence_hits_says_whether_the_strongest_box_finds_the_worst_failure():
    from evals.report import evidence_table
    from evals.scoring import evidence_hits

    gw, br = "guidewire_visibility", "branch_discernibility"
    fails = [[{"metric": gw, "kind": "wire_gaps", "severity": 0.8, "bbox": [0.0, 0.0, 0.2, 0.2]},
              {"metric": gw, "kind": "wire_fade", "severity": 0.3, "bbox": [0.8, 0.8, 1.0, 1.0]}],
             [{"metric": gw, "kind": "wire_fade", "severity": 0.5, "bbox": [0.5, 0.5, 0.7, 0.7]},
              {"metric": br, "kind": "haze", "severity": 0.9, "bbox": [0.0, 0.0, 1.0, 1.0]}],   # no place: left out
             None]
    evidence = [{gw: [{"box": [0.05, 0.05, 0.15, 0.25], "weight": 0.7}, {"box": [0.8, 0.8, 1.0, 1.0], "weight": 0.2}]},
                {gw: [{"box": [0.0, 0.0, 0.1, 0.1], "weight": 0.9}], br: [{"box": [0.0, 0.0, 0.5, 0.5], "weight": 1.0}]},
                {}]
    out = evidence_hits(fails, evidence)
    g = out[gw]
    assert g["n"] == 2 and g["touch"] == 0.5                  # row 0's strongest box is on the gaps; row 1's misses
    assert g["inside"] == round((0.75 + 0.0) / 2, 4)         # 0.1 x 0.15 of the 0.1 x 0.2 box lies inside
    assert 0.0 <= g["touch_chance"] <= 1.0
    assert out[br] == {"n": 0, "touch": None, "touch_chance": None, "inside": None, "by_kind": {}}
    # by the worst failure's kind: row 0's is the gaps (found), row 1's the fade (missed)
    assert {k: (r["n"], r["touch"], r["inside"]) for k, r in g["by_kind"].items()} == {
        "wire_gaps": (1, 1.0, 0.75), "wire_fade": (1, 0.0, 0.0)}
    lines = evidence_table(out)
    row = next(line for line in lines if line.startswith(f"| {gw} | 2 "))
    assert row.startswith(f"| {gw} | 2 | 50% | ") and row.endswith("| 38% |")
    assert any(line.startswith(f"| {gw} | wire_gaps | 1 | 100% | ") for line in lines)
    # a box as large as the frame touches any failure, by chance as well
    whole = [{gw: [{"box": [0.0, 0.0, 1.0, 1.0], "weight": 1.0}]}] * 2
    big = evidence_hits(fails[:2], whole)[gw]
    assert big["touch"] == 1.0 and big["touch_chance"] == 1.0


def test_damage_separation_tells_damaged_rows_from_clean_by_the_box_damage():
    from evals.report import damage_table
    from evals.scoring import auc, damage_separation

    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0 and auc([0.1], [0.9]) == 0.0 and auc([0.5], [0.5]) == 0.5
    assert auc([], [0.1]) is None
    gw, br = "guidewire_visibility", "branch_discernibility"

    def fail(metric, kind, severity):
        return {"metric": metric, "kind": kind, "severity": severity, "bbox": [0.1, 0.1, 0.3, 0.3]}

    def ev(*damage):
        return [{"box": [0.0, 0.0, 0.5, 0.5], "weight": 0.5, "damage": d} for d in damage]

    fails = [[fail(gw, "wire_gaps", 0.8)], [fail(gw, "wire_fade", 0.4), fail(br, "haze", 0.2)], [], [], None]
    evidence = [{gw: ev(0.2, 0.7), br: ev(0.4)}, {gw: ev(0.5), br: ev(0.4)}, {gw: ev(0.3), br: ev(0.05)},
                {gw: ev(0.1), br: ev(0.1)}, {gw: ev(0.99)}]                # the last row has no records: left out
    out = damage_separation(fails, evidence)
    g = out[gw]
    assert (g["n_damaged"], g["n_clean"]) == (2, 2) and g["auc"] == 1.0    # each row's highest box: 0.7, 0.5 vs 0.3, 0.1
    assert g["median_damaged"] == 0.6 and g["median_clean"] == 0.2
    assert g["by_kind"] == {"wire_fade": {"n": 1, "auc": 1.0, "median": 0.5},
                            "wire_gaps": {"n": 1, "auc": 1.0, "median": 0.7}}
    b = out[br]
    assert (b["n_damaged"], b["n_clean"]) == (1, 3) and b["auc"] == round(2.5 / 3, 4)   # 0.4 vs 0.4 (a tie), 0.05, 0.1
    # boxes from a routing map carry no damage: nothing to separate
    routed = [{gw: [{"box": [0.0, 0.0, 0.5, 0.5], "weight": 1.0}]} for _ in fails]
    assert damage_separation(fails, routed) == {}
    lines = damage_table(out)
    assert f"| {gw} | 2 | 0.60 | 2 | 0.20 | 1.00 |" in lines
    assert any(line.startswith(f"| {gw} | wire_gaps | 1 | 0.70 | 1.00 |") for line in lines)
