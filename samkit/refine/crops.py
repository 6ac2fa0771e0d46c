"""Where the Local Fusion Refiner looks and how its answer goes back: crop boxes from an error region,
crops resized to the refiner's square input, and a feathered paste-back.

Boxes are (x0, y0, x1, y1) integer pixels of the full-resolution frame, end exclusive.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]


def largest_region(region: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), end exclusive, of the largest 8-connected component of the (h,w)
    bool ``region``; None when it is empty."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(stats[k, i]) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    return x, y, x + w, y + h


def crop_box(region: np.ndarray, frame: tuple[int, int], point: tuple[float, float] | None,
             min_side: int, margin: float) -> Box | None:
    """The crop for the local stage in a (H, W) ``frame``: the largest component of ``region`` (h,w) bool
    (any resolution; scaled to the frame), grown by ``margin`` of its longer side, made square, at least
    ``min_side``, clipped to the frame. With an empty region: a ``min_side`` square around ``point``
    (x, y in frame pixels). None when there is neither."""
    H, W = frame
    comp = largest_region(region)
    if comp is not None:
        sx, sy = W / region.shape[1], H / region.shape[0]
        cx, cy = (comp[0] + comp[2]) * sx / 2, (comp[1] + comp[3]) * sy / 2
        side = max((comp[2] - comp[0]) * sx, (comp[3] - comp[1]) * sy) * (1 + margin)
    elif point is not None:
        (cx, cy), side = point, 0.0
    else:
        return None
    side = round(min(max(side, min_side), max(H, W)))
    x0 = round(min(max(cx - side / 2, 0), max(W - side, 0)))
    y0 = round(min(max(cy - side / 2, 0), max(H - side, 0)))
    return x0, y0, min(x0 + side, W), min(y0 + side, H)


def crop_resize(x: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """(B,C,H,W) -> the box's content (B,C,size,size), bilinear (antialiased when shrinking)."""
    x0, y0, x1, y1 = box
    patch = x[..., y0:y1, x0:x1]
    shrink = patch.shape[-1] > size or patch.shape[-2] > size
    return F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def feather(box: Box, frame: tuple[int, int], width: int) -> torch.Tensor:
    """(h,w) paste weights of a box: 1 inside, ramping linearly to 0 over ``width`` pixels towards each
    box side that is not on the frame's border (no seam where the crop meets the rest of the mask)."""
    x0, y0, x1, y1 = box
    H, W = frame

    def ramp(n: int, at_start: bool, at_end: bool) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32)
        lo = torch.ones(n) if at_start else ((i + 1) / (width + 1)).clamp(max=1.0)
        hi = torch.ones(n) if at_end else ((n - i) / (width + 1)).clamp(max=1.0)
        return torch.minimum(lo, hi)

    return ramp(y1 - y0, y0 == 0, y1 == H)[:, None] * ramp(x1 - x0, x0 == 0, x1 == W)[None, :]


def paste(logits: torch.Tensor, update: torch.Tensor, box: Box, width: int) -> torch.Tensor:
    """``logits`` (H,W) with ``update`` (size,size) (a logit change in crop coordinates) resized into
    ``box`` and added with :func:`feather` weights. Returns a new tensor."""
    x0, y0, x1, y1 = box
    up = F.interpolate(update[None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
    out = logits.clone()
    out[y0:y1, x0:x1] += feather(box, (logits.shape[-2], logits.shape[-1]), width) * up
    return out
