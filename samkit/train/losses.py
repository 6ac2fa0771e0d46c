"""SAM's training losses: focal + dice on mask logits (20:1), MSE on the predicted IoU, and optionally a
loss on which of several outputs the predicted IoU ranks first.

Shapes: logits (B,M,H,W) with M mask outputs per prompt, targets (B,H,W) bool/0-1, valid (B,H,W) bool
or None (pixels that count: inside the image and not ignored). Per-mask losses come out as (B,M).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0
CHOICE_TEMPERATURE = 0.05  # predicted IoUs / this = the logits of the choice among the outputs


def _prepare(logits: torch.Tensor, targets: torch.Tensor,
             valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 logits (B,M,H,W), targets and valid weights broadcast to (B,1,H,W)."""
    t = targets.to(torch.float32).unsqueeze(1)
    w = torch.ones_like(t) if valid is None else valid.to(torch.float32).unsqueeze(1)
    return logits.float(), t, w


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
                       alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al.) averaged over the valid pixels of each mask: (B,M,H,W) -> (B,M).

    ``alpha`` weighs foreground pixels and ``1 - alpha`` background ones (as in DETR/SAM).
    """
    x, t, w = _prepare(logits, targets, valid)
    ce = F.binary_cross_entropy_with_logits(x, t.expand_as(x), reduction="none")
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    loss = alpha_t * ce * (1 - p_t) ** gamma
    return (loss * w).sum((-2, -1)) / w.sum((-2, -1)).clamp_min(1.0)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
              smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss ``1 - (2|p.t| + s) / (|p| + |t| + s)`` over the valid pixels: (B,M,H,W) -> (B,M)."""
    x, t, w = _prepare(logits, targets, valid)
    p = torch.sigmoid(x) * w
    t = t * w
    inter = (p * t).sum((-2, -1))
    return 1 - (2 * inter + smooth) / (p.sum((-2, -1)) + t.sum((-2, -1)) + smooth)


@torch.no_grad()
def mask_iou(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """IoU of each mask thresholded at logit 0 with the target over the valid pixels: (B,M,H,W) -> (B,M).

    An empty prediction of an empty target counts as IoU 1.
    """
    pred = logits > 0
    t = targets.bool().unsqueeze(1)
    if valid is not None:
        v = valid.bool().unsqueeze(1)
        pred, t = pred & v, t & v
    inter = (pred & t).sum((-2, -1)).float()
    union = (pred | t).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


@dataclass
class LossTerms:
    """One prompt round's losses, each a scalar averaged over the batch. ``total`` is what is optimised."""

    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor
    chosen: torch.Tensor  # (B,) index of the output whose mask loss was used

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "focal", "dice", "iou")}


def sam_loss(logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor,
             valid: torch.Tensor | None = None, min_over_outputs: bool | None = None,
             focal_alpha: float = 0.25, iou_weight: float = IOU_WEIGHT, choice_weight: float = 0.0) -> LossTerms:
    """SAM's loss for one round: logits (B,M,H,W), iou_pred (B,M), targets/valid (B,H,W).

    mask loss = 20 * focal + dice per output; with several outputs (an ambiguous, single-point prompt
    with multimask output) only the output with the lowest mask loss counts, per sample. The IoU head
    regresses the actual IoU of every output's thresholded mask (MSE, target detached).
    ``min_over_outputs`` defaults to ``M > 1``. ``focal_alpha``: the focal loss's foreground weight
    (0.25 as in DETR/SAM; 0.5 weighs both classes equally, so an unsure model still predicts
    foreground where it is more likely than not). ``iou_weight``: the IoU head's MSE against the mask loss
    (SAM: 1). ``choice_weight`` (with several outputs; SAM: 0): cross-entropy of the predicted IoUs, as
    logits over the outputs (divided by ``CHOICE_TEMPERATURE``), against the output with the highest real
    IoU: it trains the ranking that picking a mask by score relies on, which the MSE learns only on average.
    """
    focal = sigmoid_focal_loss(logits, targets, valid, alpha=focal_alpha)
    dice = dice_loss(logits, targets, valid)
    mask = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice  # (B,M)
    if min_over_outputs is None:
        min_over_outputs = logits.shape[1] > 1
    if min_over_outputs:
        chosen = mask.detach().argmin(dim=1)
    else:
        chosen = torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
    pick = chosen[:, None]
    real_iou = mask_iou(logits, targets, valid)
    iou_loss = F.mse_loss(iou_pred.float(), real_iou)
    mask_loss = mask.gather(1, pick).mean()
    total = mask_loss + iou_weight * iou_loss
    if choice_weight and min_over_outputs:
        total = total + choice_weight * F.cross_entropy(iou_pred.float() / CHOICE_TEMPERATURE, real_iou.argmax(dim=1))
    return LossTerms(total=total, focal=focal.gather(1, pick).mean(),
                     dice=dice.gather(1, pick).mean(), iou=iou_loss, chosen=chosen)
