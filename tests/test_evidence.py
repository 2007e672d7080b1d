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
