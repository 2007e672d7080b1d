import numpy as np

from casiqa.evidence import evidence_boxes, upsample


def test_a_hot_region_becomes_the_first_box():
    w = np.full((9, 9), 1 / 3)
    w[2:4, 5:8] = 0.9
    boxes = evidence_boxes(w)
    assert np.allclose(boxes[0]["box"], (5 / 9, 2 / 9, 8 / 9, 4 / 9), atol=1e-4)
    assert boxes[0]["weight"] > 0.9


def test_uniform_routing_gives_no_evidence():
    assert evidence_boxes(np.full((9, 9), 1 / 3)) == []


def test_upsample_keeps_values():
    w = np.arange(4.0).reshape(2, 2)
    up = upsample(w, (4, 6))
    assert up.shape == (4, 6) and up[0, 0] == 0 and up[3, 5] == 3


def test_a_scattered_map_still_names_its_strongest_region():
    """Many small groups, none holding min_share of the excess: the strongest alone, with its small weight."""
    rng = np.random.default_rng(0)
    w = rng.uniform(0.0, 0.1, (40, 40))
    w[::4, ::4] = 0.5                                       # 100 isolated peaks, ~1 % of the mass each
    w[20, 20] = 0.55                                        # the strongest of them
    boxes = evidence_boxes(w)
    assert len(boxes) == 1 and boxes[0]["weight"] < 0.05
    assert np.allclose(boxes[0]["box"], (20 / 40, 20 / 40, 21 / 40, 21 / 40))
    assert len(evidence_boxes(w, min_share=0.0)) == 3       # without the floor: the three strongest


def test_the_assessor_takes_evidence_from_the_damage_map_where_there_is_one():
    from casiqa.assessor import HeadResult

    routing = np.random.default_rng(0).uniform(size=(4, 4, 3))
    damage = np.zeros((3, 16, 16))
    damage[1, 12:16, 0:4] = 0.9                             # branches: damage bottom left
    head = HeadResult(logits=np.zeros((3, 5)), score={}, confidence={}, routing=routing, damage=damage)
    assert np.array_equal(head.evidence_map(1), damage[1])
    assert np.allclose(evidence_boxes(head.evidence_map(1))[0]["box"], (0.0, 0.75, 0.25, 1.0))
    assert np.array_equal(HeadResult(np.zeros((3, 5)), {}, {}, routing).evidence_map(2), routing[..., 2])  # without one
    assert HeadResult(np.zeros((3, 5)), {}, {}, None).evidence_map(0) is None             # MUST off


def test_box_damage_is_the_maps_peak_inside_each_box():
    from casiqa.evidence import box_damage

    d = np.full((16, 16), 0.05)
    d[2:5, 10:14] = 0.8                                     # a damaged stretch
    d[3, 11] = 0.95                                         # ...its worst cell
    d[12:14, 1:3] = 0.6                                     # a milder one
    boxes = box_damage(d, evidence_boxes(d))
    assert [b["damage"] for b in boxes] == [0.95, 0.6]
    assert all(set(b) == {"box", "weight", "damage"} for b in boxes)
    assert box_damage(d, [{"box": (0.0, 0.0, 0.25, 0.25), "weight": 0.1}])[0]["damage"] == 0.05
    assert box_damage(d, []) == []


def test_boxes_carry_damage_only_when_they_come_from_a_damage_map():
    from casiqa.assessor import HeadResult
    from casiqa.schema import Evidence

    routing = np.random.default_rng(0).uniform(size=(4, 4, 3))
    damage = np.full((3, 16, 16), 0.02)
    damage[1, 12:16, 0:4] = 0.7
    with_map = HeadResult(np.zeros((3, 5)), {}, {}, routing, damage=damage).evidence(1)
    assert with_map[0]["damage"] == 0.7 and np.allclose(with_map[0]["box"], (0.0, 0.75, 0.25, 1.0))
    routed = HeadResult(np.zeros((3, 5)), {}, {}, routing).evidence(1)
    assert routed and all("damage" not in b for b in routed)
    assert HeadResult(np.zeros((3, 5)), {}, {}, None).evidence(0) == []
    for b in with_map + routed:                             # both validate; a routing box's damage is null
        Evidence(**b)
    assert Evidence(**routed[0]).damage is None
