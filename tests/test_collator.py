"""Training batches: labels cover exactly the answer, aux images drop, evidence maps follow the boxes."""

import json

import numpy as np
import torch
from PIL import Image

from casiqa.metrics import METRICS
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
