import pytest

from casiqa.metrics import LEVELS, METRICS, level_index, level_of, level_score, says_damaged


def test_levels_cover_the_scale_in_order():
    assert [level_of(s) for s in (1.0, 2.0, 3.0, 4.0, 5.0)] == list(LEVELS)
    assert level_of(1.49) == "bad" and level_of(1.5) == "poor" and level_of(4.5) == "excellent"
    assert all(level_score(level_of(s)) == s for s in (1.0, 2.0, 3.0, 4.0, 5.0))


def test_out_of_range_and_unknown_level_are_refused():
    with pytest.raises(ValueError, match="outside"):
        level_index(0.9)
    with pytest.raises(ValueError, match="unknown level"):
        level_score("great")


def test_metric_names_are_unique_identifiers():
    assert len(set(METRICS)) == 3 and all(m.isidentifier() for m in METRICS)


def test_fair_or_worse_says_the_structure_is_damaged():
    assert [says_damaged(v) for v in LEVELS] == [True, True, True, False, False]
    with pytest.raises(ValueError, match="unknown level"):
        says_damaged("meh")
