"""Training batches: labels cover exactly the answer, aux images drop, evidence maps follow the boxes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from casiqa.metrics import METRICS, level_of
from finetune.data import Collator, answer_json, evidence_targets


def _row(i, with_aux=True, failures=()):
    rng = np.random.default_rng(i)
    img = lambda: Image.fromarray((rng.random((112, 112)) * 255).astype(np.uint8))  # noqa: E731
    row = {"id": f"r{i}", "synthetic": img(), "scores": {m: {"mos": 2.0 + i % 3, "std": 0.5} for m in METRICS},
           "facts": {m: [f"fact {m} {i}"] for m in METRICS}, "failures": json.dumps(list(failures))}
    if with_aux:
        row["live"], row["reference"] = img(), img()
    return row


def test_labels_cover_exactly_the_answer(tiny):
    _, processor = tiny
    rows = [_row(0), _row(1, with_aux=False)]
    batch = Collator(processor, aux_drop=0.0)(rows)
    tok = processor.tokenizer
    for i, row in enumerate(rows):
        labels = batch["labels"][i]
        assert tok.decode(labels[labels != -100]) == answer_json(row) + "<|im_end|>\n"
    assert batch["level_targets"].shape == (2, 3, 5)
    assert torch.allclose(batch["level_targets"].sum(-1), torch.ones(2, 3))


def test_aux_images_are_dropped_at_random_in_training_only(tiny):
    _, processor = tiny
    rows = [_row(i) for i in range(12)]
    train = Collator(processor, aux_drop=0.5, seed=1)(rows)
    full = Collator(processor, aux_drop=0.5, train=False)(rows)
    assert len(full["image_grid_thw"]) == 36 and 12 <= len(train["image_grid_thw"]) < 36
    off = Collator(processor, use_aux=False, train=False)(rows)
    assert len(off["image_grid_thw"]) == 12


def test_evidence_maps_follow_failure_boxes():
    rows = [_row(0, failures=[{"metric": "branch_discernibility", "bbox": [0.0, 0.0, 0.5, 1.0]}]), {"id": "x"}]
    grid = torch.tensor([[1, 16, 16], [1, 8, 8], [1, 8, 8], [1, 16, 16]])  # patch grids; tokens are 2x2 merges
    maps = evidence_targets(rows, grid, [3, 1])
    assert maps.shape == (2, 3, 8, 8)
    b = METRICS.index("branch_discernibility")
    assert maps[0, b, :, :4].eq(1).all() and maps[0, b, :, 4:].eq(0).all() and maps[0, 0].eq(0).all()
    assert maps[1].eq(-1).all()  # no failure record: ignored


def test_score_noise_moves_the_prompt_and_the_answer_level_together_in_training_only(tiny):
    """With score_noise the prompt shows a noisy score as the heads' (as their error at inference)
    and the answer's level follows it, as the grammar pins it there; the soft level targets stay
    the MOS's, and evaluation batches show the MOS."""
    import re

    _, processor = tiny
    tok = processor.tokenizer
    rows = [_row(i) for i in range(16)]
    noisy = Collator(processor, aux_drop=0.0, score_noise=1.0, seed=3)
    batch = noisy(rows)
    clean = Collator(processor, aux_drop=0.0)(rows)
    assert torch.equal(batch["level_targets"], clean["level_targets"])
    moved = 0
    for i, row in enumerate(rows):
        text = tok.decode(batch["input_ids"][i])
        shown = dict(re.findall(r"- (\w+): \w+ \((\d\.\d)\)", text))
        answer = json.loads(tok.decode(batch["labels"][i][batch["labels"][i] != -100]).removesuffix("<|im_end|>\n"))
        for m in METRICS:
            assert 1.0 <= float(shown[m]) <= 5.0
            assert f"- {m}: {answer[m]['level']} ({shown[m]})" in text      # the answer's level is the prompt's
            moved += float(shown[m]) != row["scores"][m]["mos"]
    assert moved > 24
    evaluation = Collator(processor, aux_drop=0.0, score_noise=1.0, train=False)(rows)
    assert torch.equal(evaluation["input_ids"], Collator(processor, aux_drop=0.0, train=False)(rows)["input_ids"])
    with pytest.raises(ValueError, match="score_noise"):
        Collator(processor, score_noise=-0.1)


def test_prompt_scores_replace_the_mos_in_training_prompts_only(tiny):
    """prompt_scores (the stage-1 heads' scores of the rows) take the MOS's place in training
    prompts, and the answer's level follows them; rows without one show the MOS, evaluation
    batches always do, and a wrong number of scores is refused."""
    import re

    _, processor = tiny
    tok = processor.tokenizer
    rows = [_row(i) for i in range(3)]
    given = {"r0": [4.9, 1.2, 3.1], "r1": [2.6, 4.2, 1.0]}           # r2: none, so its MOS
    batch = Collator(processor, aux_drop=0.0, prompt_scores=given)(rows)
    for i, row in enumerate(rows):
        text = tok.decode(batch["input_ids"][i])
        shown = {m: float(s) for m, s in re.findall(r"- (\w+): \w+ \((\d\.\d)\)", text)}
        answer = json.loads(tok.decode(batch["labels"][i][batch["labels"][i] != -100]).removesuffix("<|im_end|>\n"))
        for j, m in enumerate(METRICS):
            want = given[row["id"]][j] if row["id"] in given else row["scores"][m]["mos"]
            assert shown[m] == pytest.approx(want, abs=0.051)
            assert f"- {m}: {answer[m]['level']} (" in text and answer[m]["level"] == level_of(want)
    mos = Collator(processor, aux_drop=0.0)(rows)
    assert torch.equal(batch["level_targets"], mos["level_targets"])              # the heads still learn the MOS
    evaluation = Collator(processor, aux_drop=0.0, train=False, prompt_scores=given)(rows)
    assert torch.equal(evaluation["input_ids"], Collator(processor, aux_drop=0.0, train=False)(rows)["input_ids"])
    with pytest.raises(ValueError, match="one score per metric"):
        Collator(processor, prompt_scores={"r0": [4.0, 3.0]})


def test_answers_explain_plain_facts_unless_the_recorded_ones_are_asked_for(tiny):
    """Plain answers (the default) say each failure's kind and severity, as the prompt's findings
    do, and no place; recorded answers are the data's facts; a row without failure records keeps
    its facts either way; anything else is refused by name."""
    import json

    from casiqa.phantom.facts import named_locations, plain_facts
    from casiqa.schema import to_explanation
    from finetune.config import CasIqaArguments
    from finetune.data import answer_json, failure_list

    _, processor = tiny
    row = _row(0, failures=[{"metric": "branch_discernibility", "kind": "discontinuity", "severity": 0.8,
                             "location": "mid LCx", "bbox": [0.1, 0.1, 0.5, 0.5]}])
    row["facts"]["branch_discernibility"] = ["discontinuity: mid LCx interrupted by 3 gap(s)"]
    assert failure_list(row)
    plain = json.loads(answer_json(row))
    recorded = json.loads(answer_json(row, facts="recorded"))
    expected = plain_facts(failure_list(row))
    for m in METRICS:
        assert plain[m]["explanation"] == to_explanation(expected[m])
        assert not named_locations(plain[m]["explanation"])
        assert recorded[m]["explanation"] == to_explanation(row["facts"][m])
    assert plain["branch_discernibility"]["explanation"] == "discontinuity: vessel severely interrupted by gaps"
    assert named_locations(recorded["branch_discernibility"]["explanation"]) == {"LCx"}
    bare = {k: v for k, v in row.items() if k != "failures"}
    assert answer_json(bare) == answer_json(bare, facts="recorded")
    with pytest.raises(ValueError, match="answer facts must be one of plain, recorded"):
        answer_json(row, facts="detailed")
    with pytest.raises(ValueError, match="answer_facts must be one of"):
        Collator(processor, answer_facts="detailed")
    with pytest.raises(ValueError, match="answer_facts must be one of"):
        CasIqaArguments(answer_facts="detailed")
