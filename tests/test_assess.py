"""The assessor and its command line: valid JSON out, clear errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from casiqa.schema import Assessment


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "agent.assess", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((256, 256)) * 255).astype(np.uint8)).save(root / "synthetic.png")
    Image.fromarray((rng.random((512, 512)) * 65535).astype(np.uint16)).save(root / "live16.png")
    Image.fromarray((rng.random((256, 256, 3)) * 255).astype(np.uint8)).save(root / "reference_rgb.png")
    Image.fromarray((rng.random((256, 384)) * 255).astype(np.uint8)).save(root / "wide.png")
    (root / "notes.png").write_text("hello")
    (root / "empty.png").write_bytes(b"")
    Image.new("1", (9000, 9000)).save(root / "bomb.png")
    return root


def test_scores_only_prints_a_valid_assessment(images, tiny_dir):
    r = _run(images / "synthetic.png", "--live", images / "live16.png", "--reference", images / "reference_rgb.png",
             "--model", tiny_dir, "--scores-only")
    assert r.returncode == 0, r.stderr
    report = Assessment.model_validate_json(r.stdout)
    assert report.auxiliary_images == ["live", "reference"]


def test_full_assessment_generates_explanations(images, tiny_dir):
    r = _run(images / "synthetic.png", "--model", tiny_dir)
    assert r.returncode == 0, r.stderr
    report = Assessment.model_validate_json(r.stdout)
    assert all(m.explanation and "not generated" not in m.explanation for m in report.metrics.__dict__.values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["notes.png"], "notes.png: not a readable image"),
        (["empty.png"], "empty.png"),
        (["missing.png"], "missing.png: no such file"),
        (["bomb.png"], "decompression bomb"),
        (["synthetic.png", "--live", "wide.png"], "live image aspect ratio"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(images, tiny_dir, args, message):
    r = _run(*args, "--model", tiny_dir, "--scores-only", cwd=images)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert r.stdout == ""


def test_usage_errors(images, tmp_path):
    assert _run().returncode == 2
    r = _run(images / "synthetic.png", "--model", tmp_path)
    assert r.returncode == 2 and "no model at" in r.stderr


def test_print_schema():
    r = _run("--print-schema")
    assert r.returncode == 0 and json.loads(r.stdout)["title"] == "Assessment"


def test_batch_keeps_order_and_reports_bad_lines(images, tiny_dir, tmp_path):
    batch = tmp_path / "cases.jsonl"
    lines = [
        {"image": str(images / "synthetic.png"), "live": str(images / "live16.png")},
        {"image": str(images / "notes.png")},
        "{broken",
        {"image": str(images / "synthetic.png"), "reference": str(images / "wide.png")},
        {"image": str(images / "reference_rgb.png")},
    ]
    batch.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    r = _run("--batch", batch, "--model", tiny_dir, "--scores-only", "--batch-size", "2")
    assert r.returncode == 1  # some lines failed
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == 5
    assert "error" in out[1] and "notes.png" in out[1]["error"] and ":2:" in out[1]["error"]
    assert "not valid JSON" in out[2]["error"] and "aspect ratio" in out[3]["error"]
    for i in (0, 4):
        Assessment.model_validate(out[i])
    assert out[0]["auxiliary_images"] == ["live"] and out[4]["auxiliary_images"] == []


@pytest.mark.slow
def test_200_sampled_assessments_from_an_untrained_model_all_validate(tiny_dir):
    from casiqa.assessor import AssessInput, Assessor

    assessor = Assessor.load(str(tiny_dir), batch_size=25)
    rng = np.random.default_rng(1)
    inputs = []
    for i in range(200):
        target = rng.random((128, 128)).astype(np.float32)
        aux = {"live": rng.random((128, 128)).astype(np.float32)} if i % 3 == 0 else {}
        inputs.append(AssessInput(target, **aux))
    reports = assessor.assess(inputs, generate=True, temperature=1.0)
    assert len(reports) == 200
    for report in reports:
        Assessment.model_validate_json(report.model_dump_json())  # round trip through JSON text


def test_compiled_grammars_are_bounded_by_the_cache(tiny_dir):
    """Each level combination compiles its own grammar (hundreds of MB with a real tokenizer):
    the assessor keeps at most `grammar_cache` of them, however many combinations it meets."""
    from casiqa.assessor import Assessor

    assessor = Assessor.load(str(tiny_dir), grammar_cache=2)
    first = assessor._generator(("good", "fair", "poor"))
    assert assessor._generator(("good", "fair", "poor")) is first       # a hit: not compiled again
    for levels in (("bad", "fair", "poor"), ("excellent", "good", "bad")):
        assessor._generator(levels)
    info = assessor._generator_for.cache_info()
    assert info.currsize == 2 and info.maxsize == 2 and info.hits == 1


def test_a_score_at_a_level_boundary_reports_a_consistent_level(tiny_dir, monkeypatch):
    """2.49996 is 'poor' but prints as 2.5 ('fair'): the level must be read from the score as
    reported, or the report contradicts itself (9 % of one eval run did, before this was fixed)."""
    import torch

    import casiqa.assessor as assessor_module
    from casiqa.assessor import Assessor
    from casiqa.inputs import AssessInput

    monkeypatch.setattr(assessor_module, "expected_score", lambda logits: torch.full(logits.shape[:-1], 2.49996))
    assessor = Assessor.load(str(tiny_dir))
    head = assessor.heads([AssessInput(np.full((64, 64), 0.5, np.float32), name="x")])[0]
    assert head.levels == ("fair",) * 3
    report = assessor.assess([AssessInput(np.full((64, 64), 0.5, np.float32), name="x")], generate=False)[0]
    checked = Assessment.model_validate_json(report.model_dump_json())
    assert all(m.score == 2.5 and m.level == "fair" for m in checked.metrics.__dict__.values())


def test_heads_passed_in_are_used_and_must_match_the_batch(tiny_dir, monkeypatch):
    """evals.run computes the heads once to group rows by level; assess then reuses them."""
    from casiqa.assessor import Assessor
    from casiqa.inputs import AssessInput

    assessor = Assessor.load(str(tiny_dir))
    rng = np.random.default_rng(2)
    batch = [AssessInput(rng.random((64, 64)).astype(np.float32), name=f"x{i}") for i in range(3)]
    heads = assessor.heads(batch)
    expected = [r.model_dump() for r in assessor.assess(batch, generate=False)]
    monkeypatch.setattr(assessor, "heads", lambda b: pytest.fail("heads computed again"))
    assert [r.model_dump() for r in assessor.assess(batch, generate=False, heads=heads)] == expected
    with pytest.raises(ValueError, match="2 head results for 3 inputs"):
        assessor.assess(batch, generate=False, heads=heads[:2])
