"""The report schema: the one contract every output is held to."""

import json

import pytest
from pydantic import ValidationError

from casiqa.metrics import LEVELS, METRICS
from casiqa.schema import Assessment, explanation_ok, generation_model, json_schema, to_explanation


def _metric(**over):
    m = {"score": 2.8, "level": "fair", "confidence": 0.4, "explanation": "distal LAD severely faded", "evidence": []}
    m.update(over)
    return m


def _report(**over):
    return {"metrics": {m: _metric(**over) for m in METRICS}, "model_id": "tiny", "auxiliary_images": ["live"]}


def test_a_good_report_validates_and_round_trips():
    a = Assessment.model_validate(_report(evidence=[{"box": [0.1, 0.2, 0.3, 0.4], "weight": 0.5}]))
    assert Assessment.model_validate_json(a.model_dump_json()) == a
    assert set(json_schema()["$defs"]["MetricsReport"]["required"]) == set(METRICS)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"level": "good"}, "contradicts score"),
        ({"score": 5.5, "level": "excellent"}, "less than or equal"),
        ({"confidence": 1.2}, "less than or equal"),
        ({"explanation": "good contrast"}, "pattern"),
        ({"explanation": "Fair"}, "pattern"),
        ({"explanation": 'quote " inside'}, "pattern"),
        ({"explanation": ""}, "pattern"),
        ({"evidence": [{"box": [0.5, 0.2, 0.3, 0.4], "weight": 0.5}]}, "ordered box"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_bad_reports_are_rejected(over, message):
    with pytest.raises(ValidationError, match=message):
        Assessment.model_validate(_report(**over))


def test_missing_metric_is_rejected():
    r = _report()
    del r["metrics"]["branch_discernibility"]
    with pytest.raises(ValidationError, match="branch_discernibility"):
        Assessment.model_validate(r)


def test_explanations_never_hold_a_level_word():
    for level in LEVELS:
        for form in (level, level.upper(), level.capitalize()):
            assert not explanation_ok(f"vessels {form}")
        for longer in (f"{level}s", f"{level}ly", f"{level.capitalize()}ness"):
            assert not explanation_ok(f"vessels {longer}")  # read as the level: refused too
        assert explanation_ok(f"vessels {level[:-1]}")  # a shorter word is fine
    assert to_explanation(["second diagonal missing", "a good one"]) == "second diagonal missing; a - one"
    assert explanation_ok(to_explanation(["x" * 40, "grid artefact (49 % of the field)"]))


def test_generation_model_pins_the_level():
    model = generation_model(("fair", "bad", "excellent"))
    ok = {m: {"level": lv, "explanation": "no artefacts"} for m, lv in zip(METRICS, ("fair", "bad", "excellent"), strict=True)}
    model.model_validate_json(json.dumps(ok))
    ok["guidewire_visibility"]["level"] = "good"
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(ok))
    with pytest.raises(ValueError, match="one level"):
        generation_model(("fair",))


def test_an_evidence_box_damage_lies_in_zero_to_one():
    from casiqa.schema import Evidence

    assert Evidence(box=(0.1, 0.1, 0.3, 0.4), weight=0.5, damage=0.62).damage == 0.62
    assert Evidence(box=(0.1, 0.1, 0.3, 0.4), weight=0.5).damage is None
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        Evidence(box=(0.1, 0.1, 0.3, 0.4), weight=0.5, damage=1.5)
