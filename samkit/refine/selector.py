"""Dynamic Selector: whether a click's answer goes through the local stage, from the global stage's error map."""
from __future__ import annotations

import torch

MIN_AREA_FRAC = 0.01  # the mask area the error ratio is relative to never counts below 1 % of the frame


def error_ratio(error_prob: torch.Tensor, mask: torch.Tensor) -> float:
    """Pixels the error map marks (probability > 0.5) relative to the mask's area: (h,w), (h,w) bool -> float.
    The area counts at least 1 % of the frame, so an empty or tiny mask does not blow the ratio up."""
    area = max(float(mask.sum()), MIN_AREA_FRAC * mask.numel())
    return float((error_prob > 0.5).sum()) / area


class DynamicSelector:
    """``mode`` "dynamic": run the local stage when :func:`error_ratio` exceeds ``threshold``;
    "always" / "never": on every click / on none (the ablations)."""

    def __init__(self, threshold: float, mode: str = "dynamic") -> None:
        self.threshold = float(threshold)
        self.mode = mode

    def __call__(self, error_prob: torch.Tensor, mask: torch.Tensor) -> bool:
        if self.mode != "dynamic":
            return self.mode == "always"
        return error_ratio(error_prob, mask) > self.threshold
