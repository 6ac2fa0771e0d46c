"""IoU with ignore pixels, NoC / NoF / mIoU@k on hand-made per-click IoU arrays."""
from __future__ import annotations

import numpy as np
import pytest

from samkit.eval.metrics import click_metrics, iou, miou_at_k, noc, nof, threshold_key


def test_iou_hand_case_with_ignore():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 px
    pred = np.zeros((4, 4), bool)
    pred[:2, :3] = True  # 6 px, 4 on gt
    assert iou(pred, gt) == pytest.approx(4 / 6)
    ignore = np.zeros((4, 4), bool)
    ignore[0, 2] = True  # one of the two false positives is ignored
    assert iou(pred, gt, ignore) == pytest.approx(4 / 5)
    ignore[:, :] = False
    ignore[0, 0] = True  # an ignored true positive leaves intersection and union
    assert iou(pred, gt, ignore) == pytest.approx(3 / 5)


def test_iou_batch_and_empty():
    gt = np.zeros((3, 3), bool)
    gt[1, 1] = True
    preds = np.stack([gt, ~gt, np.zeros_like(gt)])
    np.testing.assert_allclose(iou(preds, gt), [1.0, 0.0, 0.0])
    assert iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # nothing to segment, nothing predicted
    assert isinstance(iou(gt, gt), float)
    with pytest.raises(ValueError):
        iou(np.zeros((2, 2), bool), gt)


IOUS = np.array([
    [0.50, 0.86, 0.91, 0.96],  # 85 at click 2, 90 at 3, 95 at 4
    [0.96, 0.97, 0.97, 0.97],  # all thresholds at click 1
    [0.40, 0.60, 0.80, 0.88],  # 85 only at the last click, never 90 / 95
    [0.30, 0.30, 0.30, 0.30],  # never
])


def test_noc_hand_arrays():
    np.testing.assert_array_equal(noc(IOUS, 0.85), [2, 1, 4, 4])
    np.testing.assert_array_equal(noc(IOUS, 0.90), [3, 1, 4, 4])
    np.testing.assert_array_equal(noc(IOUS, 0.95), [4, 1, 4, 4])
    np.testing.assert_array_equal(noc(IOUS, 0.85, max_clicks=20), [2, 1, 4, 20])  # RITM: never -> max_clicks
    np.testing.assert_array_equal(noc(IOUS[:, :1], 0.85, max_clicks=20), [20, 1, 20, 20])


def test_nof_counts_never_reached():
    assert nof(IOUS, 0.85) == 1  # row 3 reaches 0.85 at the last click: not a failure
    assert nof(IOUS, 0.90) == 2
    assert nof(IOUS, 0.95) == 2
    assert nof(IOUS, 0.20) == 0


def test_miou_at_k_and_summary():
    np.testing.assert_allclose(miou_at_k(IOUS), [(0.5 + 0.96 + 0.4 + 0.3) / 4, (0.86 + 0.97 + 0.6 + 0.3) / 4,
                                                 (0.91 + 0.97 + 0.8 + 0.3) / 4, (0.96 + 0.97 + 0.88 + 0.3) / 4])
    m = click_metrics(IOUS, (0.85, 0.90, 0.95))
    assert m["noc"] == pytest.approx({"85": 11 / 4, "90": 12 / 4, "95": 13 / 4})
    assert m["nof"] == {"85": 1, "90": 2, "95": 2}
    assert len(m["miou_at_k"]) == 4
    empty = click_metrics(np.zeros((0, 4)), (0.85,))
    assert empty == {"noc": {"85": None}, "nof": {"85": 0}, "miou_at_k": []}
    assert [threshold_key(t) for t in (0.85, 0.9, 0.95, 0.875)] == ["85", "90", "95", "87.5"]
