"""The refiner's losses: focal (weighted toward the object boundary) + dice on the refined logits, and a
focal loss teaching the error map where the base logits (SAM's, or the global stage's for the local stage)
are wrong.

Shapes: logits / error_logits / base_logits (B,1,H,W); targets, valid (B,H,W) bool.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from samkit.train.losses import DICE_WEIGHT, FOCAL_WEIGHT, dice_loss, sigmoid_focal_loss


def boundary_band(targets: torch.Tensor, width: int) -> torch.Tensor:
    """(B,H,W) bool -> (B,H,W) bool: pixels within ``width`` pixels (square neighbourhood) of the
    object's contour, on either side."""
    t = targets[:, None].float()
    k = 2 * int(width) + 1
    dilated = F.max_pool2d(t, k, 1, width)
    eroded = -F.max_pool2d(-t, k, 1, width)
    return (dilated - eroded)[:, 0] > 0


def refine_loss(logits: torch.Tensor, error_logits: torch.Tensor, base_logits: torch.Tensor, targets: torch.Tensor,
                valid: torch.Tensor, focal_alpha: float = 0.5, boundary_weight: float = 4.0,
                boundary_width: int = 3, error_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Scalars ``total``, ``focal``, ``dice``, ``error``: focal with per-pixel weight
    1 + ``boundary_weight`` in the :func:`boundary_band`, dice over the valid pixels, focal of the error map
    against (base > 0) != target; total = 20 focal + dice + 20 ``error_weight`` error."""
    weights = valid.float() * (1 + boundary_weight * boundary_band(targets, boundary_width).float())
    focal = sigmoid_focal_loss(logits, targets, weights, alpha=focal_alpha).mean()
    dice = dice_loss(logits, targets, valid).mean()
    wrong = (base_logits[:, 0].detach() > 0) != targets.bool()
    error = sigmoid_focal_loss(error_logits, wrong, valid, alpha=0.5).mean()
    total = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice + FOCAL_WEIGHT * error_weight * error
    return {"total": total, "focal": focal, "dice": dice, "error": error}
