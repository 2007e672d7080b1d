"""Findings heads: targets from failure records, the loss, reading them back, the prompt, the model,
stage 1 and the assessor."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from casiqa.data.rows import DatasetFieldError
from casiqa.metrics import METRICS
from casiqa.model.findings import (
    describe,
    finding_targets,
    findings_loss,
    phantom_vocabulary,
    read_findings,
    recorded_findings,
    vocabulary,
    worst_kind_accuracy,
)

G, B, A = METRICS
VOCAB = vocabulary({G: ["wire_fade", "wire_gaps"], A: ["streaks"]}, METRICS)


def _failure(kind, metric, severity, bbox=(0.1, 0.1, 0.4, 0.4)):
    return {"kind": kind, "metric": metric, "severity": severity, "bbox": list(bbox), "location": "x"}


def test_vocabulary_follows_the_metrics_order_and_refuses_unknown_metrics():
    assert vocabulary({A: ["streaks"], G: ["wire_fade"]}, METRICS) == [(G, "wire_fade"), (A, "streaks")]
    with pytest.raises(ValueError, match="unknown metric"):
        vocabulary({"sharpness": ["x"]}, METRICS)
    phantom = phantom_vocabulary(METRICS)
    assert "wire_gaps" in phantom[G] and "branch_deletion" in phantom[B] and "streaks" in phantom[A]


def test_targets_mark_presence_and_the_worst_severity_and_refuse_unknown_kinds():
    t = finding_targets([_failure("wire_gaps", G, 0.8), _failure("wire_gaps", G, 0.3), _failure("streaks", A, 0.2)],
                        VOCAB)
    assert t.tolist() == [[0.0, 0.0], [1.0, pytest.approx(0.8)], [1.0, pytest.approx(0.2)]]
    assert (finding_targets([], VOCAB) == 0).all()                # recorded as clean
    assert (finding_targets(None, VOCAB) == -1).all()             # not recorded: ignored
    with pytest.raises(DatasetFieldError, match="'wire_blur' for guidewire_visibility.*wire_fade, wire_gaps"):
        finding_targets([_failure("wire_blur", G, 0.5)], VOCAB, "row 7")


def test_loss_ignores_unrecorded_rows_and_is_lowest_at_the_truth():
    targets = torch.stack([finding_targets([_failure("wire_gaps", G, 0.9)], VOCAB), finding_targets(None, VOCAB)])
    right = torch.tensor([[[-9.0, 0.0], [9.0, 2.2], [-9.0, 0.0]], [[5.0, 5.0]] * 3])
    wrong = right.clone()
    wrong[0, :, 0] = -wrong[0, :, 0]
    assert findings_loss(right, targets) < findings_loss(wrong, targets)
    # the second row (no records) does not count, whatever it predicts
    other = right.clone()
    other[1] = -other[1]
    assert torch.isclose(findings_loss(right, targets), findings_loss(other, targets))
    assert findings_loss(right, torch.full_like(targets, -1.0)) is None


def test_read_findings_keeps_kinds_above_the_threshold_worst_first_and_describes_them():
    logits = torch.tensor([[2.0, -2.0], [3.0, 2.0], [-3.0, 0.0]])
    found = read_findings(logits, VOCAB, METRICS)
    assert [k for k, _ in found[G]] == ["wire_gaps", "wire_fade"] and found[B] == [] and found[A] == []
    assert describe(found[G]) == '"wire gaps (severe); wire fade (slight)"'
    assert describe([]) == "none"
    # a metric scored fair or worse with nothing above the threshold reports its likeliest kind; one
    # scored good or better does not, and neither does a metric without kinds
    weak = torch.tensor([[-1.0, 0.5], [-2.0, 2.0], [-0.5, -1.0]])
    assert read_findings(weak, VOCAB, METRICS) == {G: [], B: [], A: []}
    low = {G: 2.9, B: 1.0, A: 3.6}
    assert read_findings(weak, VOCAB, METRICS, scores=low) == {G: [("wire_fade", 0.622)], B: [], A: []}
    assert read_findings(weak, VOCAB, METRICS, scores={G: 3.5, B: 1.0, A: 1.0})[A] == [("streaks", 0.269)]
    assert read_findings(weak, VOCAB, METRICS, scores={G: 3.5, B: 1.0, A: 3.5}) == {G: [], B: [], A: []}
    assert read_findings(logits, VOCAB, METRICS, scores=low) == found     # kinds above it: unchanged
    recorded = recorded_findings([_failure("streaks", A, 0.5), _failure("wire_fade", G, 0.1)], METRICS)
    assert recorded == {G: [("wire_fade", 0.1)], B: [], A: [("streaks", 0.5)]}


def test_worst_kind_accuracy_counts_the_top_kind_and_clean_rows():
    targets = torch.stack([finding_targets([_failure("wire_gaps", G, 0.9), _failure("wire_fade", G, 0.2)], VOCAB),
                           finding_targets([], VOCAB)])
    logits = torch.tensor([[[1.0, 0.0], [4.0, 0.0], [-4.0, 0.0]], [[-4.0, 0.0], [2.0, 0.0], [-4.0, 0.0]]])
    acc = worst_kind_accuracy(logits, targets, VOCAB, METRICS)
    assert acc[f"{G}_worst_kind"] == 1.0 and acc[f"{G}_clean_right"] == 0.0   # row 2 is clean, called gaps
    assert np.isnan(acc[f"{A}_worst_kind"]) and acc[f"{A}_clean_right"] == 1.0
    assert f"{B}_worst_kind" not in acc                                        # no kinds of branches


def _tiny_with_findings(**must):
    from casiqa.model import MustSettings
    from casiqa.model.loading import TinySpec, build_tiny

    settings = MustSettings(pixel_tophat=5, findings=phantom_vocabulary(METRICS), **must)
    return build_tiny(TinySpec(hidden=64, layers=1, vision_depth=2, vision_hidden=32, image_size=112, must=settings))


def _row(i, failures):
    rng = np.random.default_rng(i)
    img = lambda: Image.fromarray((rng.random((112, 112)) * 255).astype(np.uint8))  # noqa: E731
    return {"id": f"r{i}", "synthetic": img(), "live": img(), "reference": img(),
            "scores": {m: {"mos": 3.0, "std": 0.5} for m in METRICS}, "facts": {m: [f"fact {m}"] for m in METRICS},
            "failures": None if failures is None else json.dumps(failures)}


def test_model_reports_findings_per_sample_with_and_without_views():
    model, processor = _tiny_with_findings()
    must = model.model.must
    images = [_row(0, [])["synthetic"].convert("RGB"), _row(1, [])["synthetic"].convert("RGB")]
    enc = processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        out = model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"])
    assert out.finding_logits.shape == (2, len(must.vocab), 2) == (2, 20, 2)
    must.settings.dihedral_scores = True
    with torch.no_grad():
        views = model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"])
    assert views.finding_logits.shape == (2, 20, 2)
    plain, _ = build_plain()
    with torch.no_grad():
        assert plain.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"]).finding_logits is None


def build_plain():
    from casiqa.model.loading import TinySpec, build_tiny

    return build_tiny(TinySpec(hidden=64, layers=1, vision_depth=2, vision_hidden=32, image_size=112))


def test_collator_puts_recorded_findings_in_the_prompt_and_the_targets():
    from finetune.data import Collator

    model, processor = _tiny_with_findings()
    rows = [_row(0, [_failure("wire_gaps", G, 0.9)]), _row(1, None)]
    batch = Collator(processor, aux_drop=0.0, vocab=model.model.must.vocab)(rows)
    text = processor.tokenizer.batch_decode(batch["input_ids"])
    assert f'Findings:\n- {G}: "wire gaps (severe)"\n- {B}: none' in text[0]
    assert "Findings:" not in text[1]                     # unrecorded: no block, not "none"
    t = batch["finding_targets"]
    assert t.shape == (2, 20, 2) and t[0, :, 0].sum() == 1 and (t[1] == -1).all()
    # the full forward adds the findings loss
    batch.pop("evidence_targets")
    with torch.no_grad():
        out = model(**batch)
    assert out.findings_loss is not None and torch.isfinite(out.findings_loss)
    assert "finding_targets" not in Collator(processor, aux_drop=0.0)(rows)   # a model without findings


def test_warm_up_trains_the_findings_heads_and_reports_their_accuracy():
    from finetune.warmup import WarmupConfig, pixel_rows, warm_up

    model, processor = _tiny_with_findings(pixel_dense=False)
    rows = [_row(i, [_failure("wire_gaps", G, 0.3 + 0.1 * (i % 5))] if i % 2 else []) for i in range(12)]
    data = pixel_rows(rows, processor, pixels=model.model.must.pixels)
    before = model.model.must.branches[0].findings.weight.detach().clone()
    history = warm_up(model, data, data, WarmupConfig(epochs=2, batch_size=6, seed=0), log=lambda e: None)
    assert not torch.allclose(before, model.model.must.branches[0].findings.weight)
    assert 0.0 <= history[-1][f"val_{G}_worst_kind"] <= 1.0 and f"val_{A}_clean_right" in history[-1]


def test_assessor_puts_the_heads_findings_in_the_prompt(tmp_path):
    from casiqa.assessor import Assessor
    from casiqa.inputs import AssessInput

    model, processor = _tiny_with_findings()
    must = model.model.must
    with torch.no_grad():   # make the heads call every guidewire kind present, the wire gaps worst
        head = must.branches[0].findings
        head.weight.zero_()
        head.bias.copy_(torch.tensor([[5.0, 0.0]] * (head.out_features // 2)).flatten())
        k = [kind for m, kind in must.vocab if m == G].index("wire_gaps")
        head.bias[2 * k + 1] = 5.0
    assessor = Assessor(model, processor, model_id="test", device="cpu")
    grey = np.random.default_rng(0).random((112, 112)).astype(np.float32)
    inp = AssessInput(target=grey)
    result = assessor.heads([inp])[0]
    assert result.findings[G][0][0] == "wire_gaps" and len(result.findings[G]) == 6
    content = assessor.messages(inp, result)[1]["content"][-1]["text"]
    assert f'- {G}: "wire gaps (severe); ' in content
