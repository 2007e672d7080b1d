import math

import pytest
import torch

from casiqa.model.levels import confidence, expected_score, soft_label_loss, soft_levels


def test_expected_score_and_confidence():
    onehot = torch.tensor([[0.0, 0.0, 30.0, 0.0, 0.0]])
    assert expected_score(onehot).item() == pytest.approx(3.0, abs=1e-4)
    assert confidence(onehot).item() == pytest.approx(1.0, abs=1e-3)
    flat = torch.zeros(1, 5)
    assert expected_score(flat).item() == pytest.approx(3.0)
    assert confidence(flat).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_levels_are_distributions_centred_on_the_mos():
    mos = torch.tensor([1.0, 2.6, 5.0])
    target = soft_levels(mos, torch.tensor([0.5, 0.5, 0.0]))
    assert torch.allclose(target.sum(-1), torch.ones(3))
    assert target[0].argmax() == 0 and target[1].argmax() == 2 and target[2].argmax() == 4
    # mean of an interior target is close to its MOS
    assert (target[1] * torch.arange(1.0, 6.0)).sum().item() == pytest.approx(2.6, abs=0.05)


def test_soft_label_loss_is_minimal_at_the_target():
    target = soft_levels(torch.tensor([3.4]), torch.tensor([0.6]))
    best = soft_label_loss(torch.log(target), target)
    worse = soft_label_loss(torch.zeros(1, 5), target)
    entropy = -(target * torch.log(target.clamp_min(1e-12))).sum()
    assert best.item() == pytest.approx(entropy.item(), rel=1e-4) and worse.item() > best.item()
    assert worse.item() == pytest.approx(math.log(5), rel=1e-4)


def test_metric_weights_reweight_the_soft_label_loss():
    target = soft_levels(torch.tensor([[4.6, 2.0, 3.0]]), torch.tensor([[0.4, 0.5, 0.6]]))  # [1, M, L]
    logits = torch.zeros(1, 3, 5)
    per = -(target * logits.log_softmax(-1)).sum(-1)[0]
    assert soft_label_loss(logits, target, torch.ones(3)).item() == pytest.approx(per.mean().item())
    only_first = soft_label_loss(logits, target, torch.tensor([1.0, 0.0, 0.0]))
    assert only_first.item() == pytest.approx(per[0].item())  # normalised to mean 1: 3 * per[0] / 3
    doubled = soft_label_loss(logits, target, torch.tensor([2.0, 2.0, 2.0]))
    assert doubled.item() == pytest.approx(per.mean().item())  # the scale of the weights does not matter


def test_evidence_loss_rewards_logits_that_match_the_boxes():
    from casiqa.model.levels import evidence_loss

    target = torch.zeros(1, 3, 4, 4)
    target[0, 1, :, :2] = 1.0
    target[0, 2] = -1.0  # ignored
    good = (target[0].permute(1, 2, 0) * 2 - 1) * 5.0  # [h, w, M]
    bad = -good
    assert evidence_loss((good,), target) < 0.05 < evidence_loss((bad,), target)
    assert evidence_loss((None,), target) is None
