"""The RITM click rule on hand-worked masks."""
from __future__ import annotations

import numpy as np

from samkit.eval.clicks import Click, error_distance, interior_point, next_click


def square(size: int = 20, top: int = 5, side: int = 10) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[top:top + side, top:top + side] = True
    return m


def test_first_click_is_the_centre_tie_in_raster_order():
    gt = square()  # rows/cols 5..14: pixels 9 and 10 are both 5 px from the outside
    assert next_click(np.zeros_like(gt), gt) == Click(9, 9, True)  # top-left of the four tied centre pixels
    assert interior_point(gt) == Click(9, 9, True)
    odd = square(side=9)  # rows/cols 5..13: a unique centre (9, 9)
    assert interior_point(odd) == Click(9, 9, True)


def test_overshoot_gives_a_negative_click_in_the_false_positive_region():
    gt = square()
    pred = gt.copy()
    pred[5:15, 15:20] = True  # 10 x 5 false positive strip reaching the image border
    # In the strip (cols 15..19) the distance is min(col - 14, 20 - col) across (the padding at col 20
    # counts as outside) and min(row - 4, 15 - row) down: the maximum 3 first reached at (7, 17).
    assert next_click(pred, gt) == Click(7, 17, False)


def test_undershoot_gives_a_positive_click_in_the_missed_part():
    gt = square()
    pred = gt.copy()
    pred[5:15, 5:10] = False  # left half missed: FN rows 5..14, cols 5..9 (distance 3 at col 7, rows 7..12)
    assert next_click(pred, gt) == Click(7, 7, True)


def test_equal_errors_give_a_negative_click():
    gt = np.zeros((9, 9), bool)
    gt[1:4, 1:4] = True
    pred = np.zeros((9, 9), bool)
    pred[5:8, 5:8] = True  # FN and FP both 3x3: both maxima 2 -> not positive
    assert next_click(pred, gt) == Click(6, 6, False)


def test_ignore_pixels_are_no_error_and_bound_the_region():
    gt = square()
    ignore = np.zeros_like(gt)
    ignore[5:15, 5:10] = True  # left half of the object is ignored
    click = next_click(np.zeros_like(gt), gt, ignore)
    assert click == Click(7, 12, True)  # centre of the remaining 10x5 half (cols 10..14)
    assert next_click(np.zeros_like(gt), gt, ignore=np.ones_like(gt)) is None


def test_padding_and_clicked_pixels():
    gt = np.zeros((10, 10), bool)
    gt[:, :3] = True  # a strip on the left border
    # Padded: the frame is outside, distance min(x + 1, 3 - x, y + 1, 10 - y): 2 at x = 1, rows 1..8.
    assert next_click(np.zeros_like(gt), gt) == Click(1, 1, True)
    # Unpadded: only column 3 is outside, distance 3 - x: the whole column x = 0 ties at 3.
    assert next_click(np.zeros_like(gt), gt, padding=False) == Click(0, 0, True)
    again = next_click(np.zeros_like(gt), gt, clicked=[(1, 1)])
    assert again == Click(2, 1, True)  # a clicked pixel is never chosen again; next tie in raster order


def test_no_error_no_click():
    gt = square()
    assert next_click(gt, gt) is None
    assert interior_point(np.zeros_like(gt)) is None


def test_error_distance_values():
    region = np.zeros((5, 5), bool)
    region[1:4, 1:4] = True
    dt = error_distance(region)
    assert dt[2, 2] == 2.0 and dt[1, 1] == 1.0 and dt[0, 0] == 0.0
    full = np.ones((3, 3), bool)
    assert error_distance(full)[1, 1] == 2.0  # the padding frame is outside
