"""Simulated interaction: clicks in the right region with the right label, bounded box jitter, schedule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit.train.prompts import (
    PAD_LABEL,
    Prompts,
    correction_click,
    correction_clicks,
    first_prompts,
    mask_box,
    noisy_box,
    protocol_click,
    round_schedule,
    sample_point,
)


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_sample_point_is_uniform_over_the_region():
    region = np.zeros((5, 7), dtype=bool)
    region[1, 2] = region[3, 6] = True
    rng = np.random.default_rng(0)
    hits = [sample_point(region, rng) for _ in range(2000)]
    assert set(hits) == {(2, 1), (6, 3)}  # (x, y)
    assert 0.45 < hits.count((2, 1)) / len(hits) < 0.55
    assert sample_point(np.zeros((3, 3), dtype=bool), rng) is None


def test_false_negative_gives_positive_click_inside_it():
    target = rect(20, 30, 5, 15, 5, 25)
    pred = rect(20, 30, 5, 15, 5, 15)  # misses columns 15..24
    rng = np.random.default_rng(1)
    for _ in range(200):
        x, y, label = correction_click(pred, target, None, rng)
        assert label == 1 and target[y, x] and not pred[y, x]


def test_false_positive_gives_negative_click_inside_it():
    target = rect(20, 30, 5, 15, 5, 15)
    pred = rect(20, 30, 2, 18, 5, 15)  # spills over rows 2..4 and 15..17
    rng = np.random.default_rng(2)
    for _ in range(200):
        x, y, label = correction_click(pred, target, None, rng)
        assert label == 0 and pred[y, x] and not target[y, x]


def test_mixed_errors_labels_follow_the_region_and_both_occur():
    target = rect(20, 20, 0, 10, 0, 10)
    pred = rect(20, 20, 0, 10, 5, 15)  # FN: cols 0-4, FP: cols 10-14, same size
    rng = np.random.default_rng(3)
    labels = []
    for _ in range(400):
        x, y, label = correction_click(pred, target, None, rng)
        assert label == int(target[y, x]) and pred[y, x] != target[y, x]
        labels.append(label)
    assert 0.4 < np.mean(labels) < 0.6  # uniform over the error: equal areas, equal odds


def test_ignored_and_correct_pixels_give_no_click():
    target = rect(10, 10, 0, 5, 0, 5)
    pred = rect(10, 10, 0, 5, 0, 6)  # the only error is column 5
    valid = np.ones((10, 10), dtype=bool)
    valid[:, 5] = False
    rng = np.random.default_rng(4)
    assert correction_click(pred, target, valid, rng) is None
    assert correction_click(target, target, None, rng) is None
    clicks = correction_clicks(np.stack([pred, target]), np.stack([target, target]), None, rng)
    assert clicks[0][2] == 0 and clicks[1] is None


def test_mask_box_is_inclusive():
    assert mask_box(rect(20, 30, 4, 9, 7, 12)).tolist() == [7, 4, 11, 8]
    with pytest.raises(ValueError):
        mask_box(np.zeros((3, 3), dtype=bool))


def test_box_jitter_is_bounded_and_capped_at_20_px():
    rng = np.random.default_rng(5)
    small = rect(200, 300, 50, 90, 100, 160)  # 60 x 40: std 6 x 4
    big = rect(1000, 1000, 100, 900, 100, 900)  # 800 x 800: std capped at 20
    for mask, std in ((small, np.array([6.0, 4.0, 6.0, 4.0])), (big, np.full(4, 20.0))):
        gt = mask_box(mask)
        jitters = np.array([noisy_box(mask, rng) - gt for _ in range(500)])
        assert np.all(np.abs(jitters) <= 3 * std + 1e-9)
        assert np.allclose(jitters.std(axis=0), std, rtol=0.15)  # about N(0, std), clipped at 3 std
    edge = rect(50, 50, 0, 50, 0, 50)  # box on the frame: stays inside it, corners ordered
    for _ in range(100):
        x0, y0, x1, y1 = noisy_box(edge, rng)
        assert 0 <= x0 <= x1 <= 49 and 0 <= y0 <= y1 <= 49


def test_round_schedule_places_mask_only_rounds():
    rng = np.random.default_rng(6)
    for _ in range(20):
        s = round_schedule(8, 2, rng)
        assert len(s) == 10 and sum(s) == 8 and s[-1] is False
    assert round_schedule(3, 0, rng) == [True] * 3
    assert round_schedule(0, 1, rng) == [False]


def test_first_prompts_points_inside_objects_and_boxes():
    targets = np.stack([rect(32, 32, 2, 10, 3, 20), rect(32, 32, 20, 30, 10, 12)])
    rng = np.random.default_rng(7)
    p = first_prompts(targets, rng, box_prob=0.0)
    assert p.boxes is None and p.points.shape == (2, 1, 2) and p.labels.tolist() == [[1], [1]]
    for i, (x, y) in enumerate(p.points[:, 0].astype(int)):
        assert targets[i, y, x]
    assert p.ambiguous
    b = first_prompts(targets, rng, box_prob=1.0)
    assert b.points is None and b.boxes.shape == (2, 4) and not b.ambiguous


def test_add_clicks_pads_missing_clicks_and_converts_to_torch():
    p = Prompts(boxes=np.array([[1, 2, 10, 12]], dtype=np.float32)).add_clicks([None])
    assert p.labels.tolist() == [[PAD_LABEL]]
    p = Prompts().add_clicks([(3, 4, 1), (5, 6, 0)]).add_clicks([None, (7, 8, 1)])
    assert p.points.tolist() == [[[3, 4], [0, 0]], [[5, 6], [7, 8]]]
    assert p.labels.tolist() == [[1, PAD_LABEL], [0, 1]]
    kw = p.to_torch("cpu")
    assert kw["boxes"] is None and kw["points"][0].dtype == torch.float32 and kw["points"][1].shape == (2, 2)


def test_same_seed_same_session():
    targets = np.stack([rect(40, 40, 5, 30, 5, 30)])
    preds = np.stack([rect(40, 40, 10, 35, 0, 20)])

    def run(seed: int) -> list:
        rng = np.random.default_rng(seed)
        p = first_prompts(targets, rng, 0.5)
        return [p.points, p.boxes, correction_clicks(preds, targets, None, rng), round_schedule(4, 2, rng)]

    a, b = run(11), run(11)
    assert repr(a) == repr(b)


def test_protocol_click_lands_deep_in_the_larger_error_region():
    target = np.zeros((40, 60), bool)
    target[5:35, 5:55] = True  # object
    pred = np.zeros_like(target)
    pred[5:35, 5:20] = True  # found its left part: the missed part is the larger error
    pred[0:3, 0:3] = True  # a small false positive
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y, label = protocol_click(pred, target, None, rng, min_frac=0.5)
        assert label == 1 and target[y, x] and not pred[y, x]
        assert 20 <= x < 55 and 5 <= y < 35
        assert min(x - 20, 54 - x, y - 5, 34 - y) >= 6  # at least half the largest distance (~15) from the edge
    assert protocol_click(target, target, None, rng) is None


def test_protocol_prob_switches_first_clicks_to_the_interior():
    target = np.zeros((1, 41, 41), bool)
    target[0, 0:41, 0:41] = True
    rng = np.random.default_rng(1)
    centred = [first_prompts(target, rng, box_prob=0.0, protocol_prob=1.0).points[0, 0] for _ in range(10)]
    assert all(abs(p[0] - 20) <= 10 and abs(p[1] - 20) <= 10 for p in centred)
    clicks = correction_clicks(np.zeros_like(target), target, None, rng, protocol_prob=1.0)
    assert clicks[0] is not None and clicks[0][2] == 1
