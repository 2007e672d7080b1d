"""The real-image sanity suite builds monotone ladders and runs end to end."""

import json

import numpy as np

from casiqa.inputs import AssessInput
from evals.sanity import (
    SEVERITIES,
    box_on_place,
    evidence_summary,
    geodesic_from_widest,
    inpaint,
    ladder_cases,
    ladders,
    orientation_spread,
    orientations,
)


def _vessel():
    image = np.full((96, 96), 0.6)
    mask = np.zeros((96, 96), bool)
    mask[20:26, 10:86] = True      # a main vessel
    mask[26:70, 60:64] = True      # a branch off it
    image[mask] = 0.35
    return image, mask


def test_geodesic_path_follows_the_vessel():
    image, mask = _vessel()
    dmap, path = geodesic_from_widest(mask)
    assert np.isfinite(dmap[mask]).all() and not np.isfinite(dmap[~mask]).any()
    assert len(path) > 40 and mask[np.round(path[:, 1]).astype(int), np.round(path[:, 0]).astype(int)].mean() > 0.9
    assert abs(inpaint(image, mask)[mask].mean() - 0.6) < 0.05  # vessels gone, background kept


def test_ladders_remove_more_with_severity():
    image, mask = _vessel()
    out = ladders(image, mask, 0)
    assert all(len(v) == len(SEVERITIES) for v in out.values())
    for metric, inputs in out.items():
        change = [np.abs(x.target - inputs[0].target).sum() for x in inputs]
        assert change[0] == 0 and all(a < b for a, b in zip(change[1:], change[2:], strict=False)), (metric, change)


def test_sanity_command(tmp_path, tiny_dir, real_dir):
    from evals.sanity import main

    assert main(["--model", str(tiny_dir), "--real", str(real_dir), "--out", str(tmp_path), "--max_images", "2"]) == 0
    result = json.loads((tmp_path / "sanity.json").read_text())
    assert result["images"] == 2 and set(result["ladders"]) == {"guidewire_visibility", "branch_discernibility",
                                                                "artifact_interference"}
    assert set(result["orientation"]) == set(result["ladders"])
    # the wire's and the branches' rungs with damage are scored for evidence (boxes from the routing maps)
    assert set(result["evidence"]) == {"guidewire_visibility", "branch_discernibility"}
    assert all(r["n"] == 2 * (len(SEVERITIES) - 1) for r in result["evidence"].values())
    # its boxes come from the routing maps (no dense head): they carry no damage to follow the ladders
    assert "evidence_damage" not in result


def test_orientations_turn_every_image_together_and_spread_is_measured():
    image, mask = _vessel()
    image[0, :5] = 0.0                         # a mark that shows where the corner went
    turned = orientations(AssessInput(image, live=mask.astype(float), reference=None))
    assert len(turned) == 8 and np.array_equal(turned[0].target, image) and turned[0].reference is None
    corners = {(int(t.target[:5, :5].min() == 0), int(t.target[:5, -5:].min() == 0), int(t.target[-5:, :5].min() == 0))
               for t in turned}
    assert len({t.target.tobytes() for t in turned}) == 8 and len(corners) == 4      # 8 views, the mark in 4 corners
    for t in turned:                           # live turned with its target: the vessel lies where it does
        assert np.array_equal(t.live > 0, t.target == 0.35)
    scores = np.full((2, 8, 3), 4.0)
    scores[1, 3, 0] = 2.4                      # one case's guidewire score moves in one orientation
    spread = orientation_spread(scores)
    assert spread["guidewire_visibility"]["max_spread"] == 1.6 and spread["guidewire_visibility"]["level_changes"] == 0.5
    assert spread["branch_discernibility"]["max_spread"] == 0.0 and spread["branch_discernibility"]["level_changes"] == 0.0


def test_ladder_places_are_where_the_rung_changed_the_image():
    image, mask = _vessel()
    inputs, places = ladder_cases(image, mask, 0)
    assert places["artifact_interference"] == [None] * len(SEVERITIES)
    for metric in ("guidewire_visibility", "branch_discernibility"):
        assert places[metric][0] is None and all(p is not None and p.any() for p in places[metric][1:])
    sizes = [p.sum() for p in places["branch_discernibility"][1:]]
    assert all(a < b for a, b in zip(sizes, sizes[1:], strict=False))          # more removed with severity
    for x, place in zip(inputs["branch_discernibility"][1:], places["branch_discernibility"][1:], strict=True):
        changed = x.target != image
        assert changed.any() and not (changed & ~place).any()                  # nothing changed off the place
    gaps = places["guidewire_visibility"][-1]
    wire = inputs["guidewire_visibility"][0].target != image                    # the clean wire's pixels
    assert (gaps & wire).sum() > 0.5 * gaps.sum()                               # the gaps lie on the wire


def test_a_box_on_the_damage_touches_it_and_chance_is_a_random_box_of_its_size():
    place = np.zeros((100, 100), bool)
    place[10:20, 10:20] = True
    rng = np.random.default_rng(0)
    hit, chance, inside = box_on_place((0.1, 0.1, 0.2, 0.2), place, rng, draws=400)
    assert hit and inside == 1.0 and 0.01 < chance < 0.1                      # ~19 x 19 of 91 x 91 offsets
    miss = box_on_place((0.5, 0.5, 0.9, 0.9), place, rng)
    assert not miss[0] and miss[2] == 0.0
    assert box_on_place((0.0, 0.0, 1.0, 1.0), place, rng)[1] == 1.0            # the whole frame always touches
    summary = evidence_summary({"guidewire_visibility": [(True, 0.2, 1.0), (False, 0.4, 0.0)], "branch_discernibility": []})
    assert summary == {"guidewire_visibility": {"n": 2, "touch": 0.5, "touch_chance": 0.3, "inside": 0.5}}


def test_damage_by_rung_follows_the_ladder_and_skips_maps_without_damage():
    from evals.sanity import damage_by_rung

    rising = np.array([[0.1, 0.2, 0.4, 0.6, 0.8], [0.05, 0.3, 0.3, 0.5, 0.9], [0.2, 0.1, 0.5, 0.7, 0.6]])
    out = damage_by_rung({"guidewire_visibility": rising, "branch_discernibility": np.full((3, 5), np.nan)})
    g = out["guidewire_visibility"]
    assert g["mean_by_rung"][0] == round(0.35 / 3, 4) and g["mean_by_rung"][-1] == round(2.3 / 3, 4)
    assert g["pooled_srcc"] > 0.8 and g["auc_intact_worst"] == 1.0
    assert "branch_discernibility" not in out                 # routing maps: boxes without damage
