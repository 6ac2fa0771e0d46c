"""Losses against hand-computed values, the ignore rule and the min-over-outputs rule."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from samkit.train.losses import CHOICE_TEMPERATURE, dice_loss, mask_iou, sam_loss, sigmoid_focal_loss

BIG = 100.0  # |logit| at which sigmoid is 0/1 to float precision


def hard_logits(mask: list[list[int]]) -> torch.Tensor:
    """0/1 (H,W) -> (1,1,H,W) logits of +-BIG."""
    return (torch.tensor(mask, dtype=torch.float32) * 2 - 1)[None, None] * BIG


def test_focal_constant_logit_hand_values():
    # logit 0: p = 0.5, ce = ln 2, (1 - p_t)^2 = 1/4; alpha_t = 0.25 on object, 0.75 on background.
    logits = torch.zeros(1, 1, 2, 2)
    fg = torch.ones(1, 2, 2, dtype=torch.bool)
    assert sigmoid_focal_loss(logits, fg).item() == pytest.approx(0.25 * math.log(2) * 0.25)
    assert sigmoid_focal_loss(logits, ~fg).item() == pytest.approx(0.75 * math.log(2) * 0.25)
    half = torch.tensor([[[1, 0], [1, 0]]], dtype=torch.bool)
    assert sigmoid_focal_loss(logits, half).item() == pytest.approx(0.5 * math.log(2) * 0.25)


def test_focal_of_a_confident_correct_prediction_is_zero():
    target = torch.tensor([[[1, 0, 0, 1]]], dtype=torch.bool)
    assert sigmoid_focal_loss(hard_logits([[1, 0, 0, 1]]), target).item() == pytest.approx(0.0, abs=1e-12)


def test_dice_half_overlap():
    # prediction {0,1}, target {1,2}: |p.t| = 1, |p| = |t| = 2 -> 1 - (2 + 1) / (2 + 2 + 1) = 0.4
    target = torch.tensor([[[0, 1, 1, 0]]], dtype=torch.bool)
    assert dice_loss(hard_logits([[1, 1, 0, 0]]), target).item() == pytest.approx(0.4)
    assert dice_loss(hard_logits([[0, 1, 1, 0]]), target).item() == pytest.approx(0.0, abs=1e-6)


def test_ignored_pixels_do_not_count():
    target = torch.tensor([[[0, 1, 1, 0]]], dtype=torch.bool)
    logits = hard_logits([[1, 1, 1, 0]])  # wrong only at pixel 0
    valid = torch.tensor([[[0, 1, 1, 1]]], dtype=torch.bool)
    assert dice_loss(logits, target, valid).item() == pytest.approx(0.0, abs=1e-6)
    assert sigmoid_focal_loss(logits, target, valid).item() == pytest.approx(0.0, abs=1e-12)
    assert mask_iou(logits, target, valid).item() == pytest.approx(1.0)
    # the focal mean is over valid pixels only: logit 0 everywhere, one valid object pixel
    one = torch.tensor([[[0, 1, 0, 0]]], dtype=torch.bool)
    loss = sigmoid_focal_loss(torch.zeros(1, 1, 1, 4), one, one)
    assert loss.item() == pytest.approx(0.25 * math.log(2) * 0.25)


def test_mask_iou_hand_values():
    target = torch.tensor([[[0, 1, 1, 0]]], dtype=torch.bool)
    assert mask_iou(hard_logits([[1, 1, 0, 0]]), target).item() == pytest.approx(1 / 3)
    empty = torch.zeros(1, 1, 4, dtype=torch.bool)
    assert mask_iou(hard_logits([[0, 0, 0, 0]]), empty).item() == 1.0


def _three_outputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of 2, 3 outputs on a 1x4 image; sample 0 is matched by output 1, sample 1 by output 2."""
    target = torch.tensor([[[0, 1, 1, 0]], [[1, 1, 0, 0]]], dtype=torch.bool)
    outs = [[[[1, 1, 1, 1]], [[0, 1, 1, 0]], [[1, 0, 0, 0]]],
            [[[0, 0, 0, 1]], [[1, 1, 1, 1]], [[1, 1, 0, 0]]]]
    logits = (torch.tensor(outs, dtype=torch.float32) * 2 - 1) * BIG
    return logits.requires_grad_(), target


def test_min_over_outputs_per_sample_and_iou_loss_on_all():
    logits, target = _three_outputs()
    iou_pred = torch.full((2, 3), 0.3, requires_grad=True)
    terms = sam_loss(logits, iou_pred, target)
    assert terms.chosen.tolist() == [1, 2]
    assert terms.total.item() == pytest.approx(terms.iou.item(), abs=1e-5)  # chosen masks are perfect
    # actual IoUs: sample 0 [2/4, 1, 0/3], sample 1 [0/3, 2/4, 1]
    actual = torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.5, 1.0]])
    assert terms.iou.item() == pytest.approx(((0.3 - actual) ** 2).mean().item())
    terms.total.backward()
    assert iou_pred.grad.abs().min() > 0  # every output's IoU prediction is trained
    grad = logits.grad.abs().sum(dim=(-2, -1))
    assert grad[0, 0] == 0 and grad[0, 2] == 0 and grad[1, 0] == 0 and grad[1, 1] == 0


def test_iou_weight_scales_the_iou_term_only():
    logits, target = _three_outputs()
    iou_pred = torch.full((2, 3), 0.3)
    one, ten = sam_loss(logits, iou_pred, target), sam_loss(logits, iou_pred, target, iou_weight=10.0)
    assert one.iou.item() == pytest.approx(ten.iou.item()) and one.iou.item() > 0
    assert ten.total.item() - one.total.item() == pytest.approx(9 * one.iou.item(), rel=1e-5)


def test_choice_loss_prefers_the_ranking_that_picks_the_best_output():
    logits, target = _three_outputs()  # best outputs: 1 and 2
    right = torch.tensor([[0.5, 0.9, 0.1], [0.1, 0.5, 0.9]], requires_grad=True)
    wrong = torch.tensor([[0.5, 0.1, 0.9], [0.9, 0.5, 0.1]])
    plain = sam_loss(logits, right, target)
    ranked = sam_loss(logits, right, target, choice_weight=1.0)
    expected = F.cross_entropy(right.detach() / CHOICE_TEMPERATURE, torch.tensor([1, 2]))
    assert ranked.total.item() - plain.total.item() == pytest.approx(expected.item(), abs=1e-6)
    assert sam_loss(logits, wrong, target, choice_weight=1.0).total > ranked.total
    ranked.total.backward()
    assert right.grad[0, 1] < 0 and right.grad[1, 2] < 0  # raising the best output's score lowers the loss
    single = sam_loss(logits[:, :1], torch.zeros(2, 1), target, choice_weight=1.0)
    assert single.total.item() == pytest.approx(sam_loss(logits[:, :1], torch.zeros(2, 1), target).total.item())


def test_mask_loss_weights_focal_20_to_dice_1():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[1, 0], [1, 0]]], dtype=torch.bool)
    terms = sam_loss(logits, torch.zeros(1, 1), target)
    expected_focal = 0.5 * math.log(2) * 0.25
    expected_dice = 1 - (2 * 1.0 + 1) / (2.0 + 2 + 1)  # p = 0.5 everywhere: |p.t| = 1, |p| = 2, |t| = 2
    # IoU target: logit 0 is not > 0, so the mask is empty: IoU 0, predicted 0 -> no IoU loss
    assert terms.focal.item() == pytest.approx(expected_focal)
    assert terms.dice.item() == pytest.approx(expected_dice)
    assert terms.total.item() == pytest.approx(20 * expected_focal + expected_dice)


def test_single_output_uses_output_zero():
    logits, target = _three_outputs()
    terms = sam_loss(logits[:, :1], torch.zeros(2, 1), target)
    assert terms.chosen.tolist() == [0, 0]
    assert terms.dice.item() > 0.1
