"""Click simulation of the RITM protocol (Sofiiuk et al. 2022, ``isegm/inference/clicker.py``).

The next click goes to the largest error region: FN = gt & ~pred, FP = pred & ~gt (ignored pixels
belong to neither). Each region's Euclidean distance transform is taken (exact L2,
``cv2.distanceTransform(..., DIST_L2, DIST_MASK_PRECISE)``) with a 1-px zero frame around the image,
so the image border counts as region boundary. The click is positive when the FN region's largest
distance is larger than the FP region's (a tie gives a negative click), and lands on a pixel
of maximal distance: the interior point farthest from the error boundary.

Ties between pixels of equal distance go to the first in raster order (smallest y, then smallest
x), as RITM's ``np.where(dt == max)[0]``: a 10x10 square's four central pixels are tied and the
top-left one is chosen.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np


class Click(NamedTuple):
    """A simulated click at pixel row ``y``, column ``x``; positive = foreground."""

    y: int
    x: int
    is_positive: bool


def next_click(pred_mask: np.ndarray, gt_mask: np.ndarray, ignore: np.ndarray | None = None,
               padding: bool = True, clicked: Sequence[tuple[int, int]] = ()) -> Click | None:
    """The RITM click correcting pred_mask (H, W) towards gt_mask (H, W); ignore (H, W) bool.

    ``clicked``: (y, x) pixels clicked before, never chosen again (RITM's ``not_clicked_map``).
    Returns None when there is no error pixel left to click (pred equals gt outside ``ignore``).
    """
    pred = np.asarray(pred_mask, dtype=bool)
    gt = np.asarray(gt_mask, dtype=bool)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same (H, W)")
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    fn_dt = error_distance(gt & ~pred & valid, padding)
    fp_dt = error_distance(pred & ~gt & valid, padding)
    for y, x in clicked:
        fn_dt[y, x] = fp_dt[y, x] = 0.0
    fn_max, fp_max = float(fn_dt.max()), float(fp_dt.max())
    if max(fn_max, fp_max) <= 0.0:
        return None
    positive = fn_max > fp_max
    row, col = np.unravel_index(int(np.argmax(fn_dt if positive else fp_dt)), gt.shape)  # first in raster order
    return Click(int(row), int(col), bool(positive))


def error_distance(region: np.ndarray, padding: bool = True) -> np.ndarray:
    """(H, W) float32 Euclidean distance of each pixel of the bool ``region`` to the nearest pixel
    outside it (0 outside; 1 for a pixel touching the outside). ``padding``: the image border
    counts as outside."""
    r = region.astype(np.uint8)
    if padding:
        r = np.pad(r, 1)
    dt = cv2.distanceTransform(r, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dt[1:-1, 1:-1] if padding else dt


def interior_point(mask: np.ndarray, ignore: np.ndarray | None = None) -> Click | None:
    """The first RITM click on ``mask`` (H, W) from an empty prediction: the object's pixel
    farthest from its boundary. Also SAM's single-point protocol. None for an empty mask."""
    return next_click(np.zeros_like(mask, dtype=bool), mask, ignore)
