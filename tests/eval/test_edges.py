"""Edge benchmark: hand-computed precision/recall, edge NMS, ODS vs OIS, and the SAM edge pipeline."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from samkit import Predictor
from samkit.data.sample import Sample
from samkit.eval import edges
from samkit.eval.edges import (
    average_precision,
    boundary_counts,
    edge_nms,
    load_boundaries,
    match_boundaries,
    ods_ois,
    precision_recall_f,
    thresholds_for,
)
from samkit.predict.predictor import Prediction

# 20 x 20 image, max_dist 0.04 -> tolerance 0.04 * sqrt(800) = 1.13 px: 1 px apart matches, diagonal (1.41) not.
TOL = 0.04


def hline(row: int, c0: int, c1: int, value: float = 1.0, size: int = 20) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    m[row, c0:c1] = value
    return m


@pytest.mark.slow
def test_precision_recall_by_hand():
    gt = hline(10, 2, 12) > 0  # 10 px
    e = hline(11, 2, 10)  # 8 px one row below, all within tolerance
    e[2, 18] = 0.5  # a far false positive, only above threshold 0.25
    counts = boundary_counts(e, gt[None], thresholds=(0.25, 0.75), max_dist=TOL)
    np.testing.assert_array_equal(counts, [[8, 10, 8, 9], [8, 10, 8, 8]])  # cntR, sumR, cntP, sumP
    p, r, f = precision_recall_f(counts)
    np.testing.assert_allclose(p, [8 / 9, 1.0])
    np.testing.assert_allclose(r, [0.8, 0.8])
    np.testing.assert_allclose(f, [16 / 19, 8 / 9])  # 2PR / (P + R)


def test_several_annotators_pool_recall_and_union_precision():
    gt1 = hline(10, 2, 12) > 0  # 10 px
    gt2 = hline(2, 16, 20) > 0  # 4 px, one of them under the far detection
    e = hline(11, 2, 10)
    e[2, 18] = 1.0
    counts = boundary_counts(e, np.stack([gt1, gt2]), thresholds=(0.5,), max_dist=TOL)
    np.testing.assert_array_equal(counts, [[8 + 1, 14, 9, 9]])  # every detection matches someone: P = 1, R = 9/14


def test_matching_is_one_to_one():
    gt = hline(10, 2, 12) > 0
    two_rows = (hline(9, 2, 12) + hline(11, 2, 12)) > 0  # 20 px, each gt pixel has two candidates
    mp, mg = match_boundaries(two_rows, gt, 1.13)
    assert mp.sum() == 10 and mg.sum() == 10
    # Shifted one column along the row (cols 3..12): nearest-first matching would pair the 9 coinciding
    # pixels and stop; the maximum matching pairs all 10 at distance 1.
    mp, mg = match_boundaries(np.roll(gt, 1, axis=1), gt, 1.13)
    assert mp.sum() == 10 and mg.sum() == 10
    assert match_boundaries(gt, np.zeros_like(gt), 1.13)[0].sum() == 0


def test_matching_prefers_the_nearest_pixel():
    gt = np.zeros((20, 20), bool)
    gt[10, 5] = True
    e = np.zeros((20, 20), np.float32)
    e[10, 5] = e[11, 5] = 1.0  # on the boundary, and 1 px off it
    # Both annotators match the coinciding pixel (distance 0), so only 1 of the 2 detections is correct.
    np.testing.assert_array_equal(boundary_counts(e, np.stack([gt, gt]), (0.5,), max_dist=TOL), [[2, 2, 1, 2]])


def test_nms_thins_a_blurred_line_to_one_pixel():
    line = hline(15, 0, 32, size=32)
    thin = edge_nms(cv2.GaussianBlur(line, (0, 0), 1.5), border=0)
    assert np.array_equal(np.unique(np.nonzero(thin)[0]), [15]) and np.count_nonzero(thin) == 32
    plateau = cv2.GaussianBlur(line + hline(16, 0, 32, size=32), (0, 0), 1.0)  # rows 15 and 16 tie
    thin = edge_nms(plateau, border=0)
    assert np.array_equal(np.unique(np.nonzero(thin)[0]), [15]) and np.count_nonzero(thin) == 32  # the upper one
    diag = cv2.GaussianBlur(np.eye(32, dtype=np.float32), (0, 0), 1.5)
    ys, xs = np.nonzero(edge_nms(diag))  # border=5: values fade to 0 at the image edge
    assert np.array_equal(ys, xs) and np.array_equal(ys, np.arange(1, 31))


def test_nms_border_ramp():
    # A 1-px line across a 12 x 12 map survives NMS; within 5 px of the left/right edges it is scaled
    # by distance / 5, so the edge columns themselves become 0 (as edgesNms(E, O, 1, 5)).
    ramp = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    out = edge_nms(hline(6, 0, 12, size=12), border=5)
    np.testing.assert_allclose(out[6], ramp, atol=1e-6)
    assert np.count_nonzero(out) == 10


def test_ods_ois_ap_on_two_images():
    # thresholds (0.3, 0.6); counts [cntR, sumR, cntP, sumP]
    a = [[10, 10, 10, 40], [8, 10, 8, 8]]  # F = 0.4, 8/9: best at 0.6
    b = [[10, 10, 10, 10], [2, 10, 2, 2]]  # F = 1, 1/3: best at 0.3
    r = ods_ois(np.array([a, b]), thresholds=(0.3, 0.6))
    # Summed: 0.3 -> P 20/50, R 1, F 4/7; 0.6 -> P 1, R 1/2, F 2/3.
    assert r["ods"] == pytest.approx({"f": 2 / 3, "precision": 1.0, "recall": 0.5, "threshold": 0.6})
    # Each image at its own best: [8,10,8,8] + [10,10,10,10] -> P 1, R 0.9, F 18/19.
    assert r["ois"] == pytest.approx({"f": 18 / 19, "precision": 1.0, "recall": 0.9})
    assert r["image_best_thresholds"] == [0.6, 0.3]
    # PR points (R, P): (0.5, 1), (1, 0.4); precision 1 - 1.2 (R - 0.5) at R = 0.50..1.00, summed / 100.
    assert r["ap"] == pytest.approx(sum(1 - 1.2 * (k / 100 - 0.5) for k in range(50, 101)) / 100)
    assert average_precision(np.array([1.0]), np.array([0.5])) == 0.0
    np.testing.assert_allclose(thresholds_for(3), [0.25, 0.5, 0.75])


class TwoRegions:
    """Each grid point gets its own region (left: cols < 30) twice (a duplicate) and the whole image."""

    def __init__(self, h: int = 48, w: int = 64) -> None:
        self.region = np.zeros((h, w), bool)
        self.region[:, :30] = True

    def set_image(self, image: np.ndarray) -> None:
        assert image.shape[:2] == self.region.shape

    def predict_batch(self, points=None, labels=None, boxes=None, mask_input=None, multimask=False) -> Prediction:
        assert multimask and np.all(labels == 1)
        r = [self.region if self.region[int(y), int(x)] else ~self.region for (x, y), in points]
        m = np.array([[x, x, np.ones_like(x)] for x in r])
        n = len(m)
        return Prediction(m, np.where(m, 8.0, -8.0).astype(np.float32), np.tile([0.9, 0.8, 0.5], (n, 1)),
                          np.zeros((n, 3, 256, 256), np.float32))


def test_pipeline_on_two_regions():
    fake = TwoRegions()
    e = edges.detect_edges(fake, np.zeros((48, 64, 3), np.uint8), points_per_side=4)
    assert np.array_equal(np.unique(np.nonzero(e)[1]), [29])  # the 2-px Sobel step thinned to its left column
    np.testing.assert_allclose(e[:6, 29], [0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-6)  # border ramp
    gt = np.zeros((1, 48, 64), bool)
    gt[0, :, 29] = True
    sample = Sample("two", np.zeros((48, 64, 3), np.uint8), np.zeros((0, 48, 64), bool), extra={"boundaries": gt})
    r = edges.evaluate(fake, [sample], points_per_side=4)
    # Tolerance 0.0075 * 80 = 0.6 px: rows 1..46 detected and matched, rows 0 and 47 (zeroed border) missed.
    assert r["ods"] == pytest.approx({"f": 46 / 47, "precision": 1.0, "recall": 46 / 48, "threshold": 0.01})
    assert r["ois"]["f"] == pytest.approx(46 / 47) and r["num_images"] == 1
    assert len(r["pr_curve"]["precision"]) == 99
    json.dumps(r)
    with pytest.raises(ValueError, match="boundaries"):
        edges.evaluate(fake, [Sample("x", sample.image, sample.masks)])
    assert edges.sample_boundaries(sample).shape == (1, 48, 64)


@pytest.mark.slow
def test_bsds_plumbing_with_mobile_sam(fill_mobile_sam, data_dir):
    from samkit.data.readers import BSDS500Dataset

    b = load_boundaries(data_dir / "BSDS500" / "groundTruth" / "test" / "100007.mat")
    assert b.shape == (5, 321, 481) and b.dtype == bool and b.any(axis=(1, 2)).all()
    bsds = BSDS500Dataset(data_dir / "BSDS500", split="test")
    r = edges.evaluate(Predictor(fill_mobile_sam), bsds, points_per_side=2, thresholds=5, max_samples=1)
    assert r["images"] == [bsds.names[0]]
    assert 0.0 <= r["ods"]["f"] <= 1.0 and r["ods"]["f"] <= r["ois"]["f"] + 1e-12
    assert len(r["pr_curve"]["recall"]) == 5
