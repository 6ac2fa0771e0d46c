"""Boundary IoU and clicks left on the wrong side of a mask."""
from __future__ import annotations

import numpy as np

from samkit.eval.metrics import boundary_iou, boundary_region, iou, wrong_side_clicks


def square(n: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_boundary_region():
    band = boundary_region(square(20, 5, 15, 5, 15), 2)
    assert band.sum() == 100 - 36  # the 10x10 square minus its 6x6 core
    assert boundary_region(square(20, 0, 20, 0, 20), 1).sum() == 76  # the image border counts as outside


def test_boundary_iou_is_stricter_than_iou():
    gt = square(200, 20, 180, 20, 180)
    shifted = square(200, 24, 184, 20, 180)  # the same box 4 px lower
    assert boundary_iou(gt, gt) == 1.0
    assert iou(shifted, gt) > 0.9
    assert boundary_iou(shifted, gt) < 0.6  # width = 2 % of the diagonal = 6 px
    assert boundary_iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_wrong_side_clicks():
    mask = square(50, 10, 30, 10, 30)
    clicks = [[15, 15, 1], [40, 40, 0], [45, 5, 1], [20, 20, 0]]  # [x, y, label]
    assert wrong_side_clicks(mask, clicks) == 2
    assert wrong_side_clicks(mask, []) == 0
