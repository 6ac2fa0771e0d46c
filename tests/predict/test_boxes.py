"""Torch box ops against hand-computed cases."""
from __future__ import annotations

import torch

from samkit.predict.boxes import batched_nms, box_area, box_iou, masks_to_boxes, nms


def test_area_and_iou_by_hand():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 20, 30]])
    assert box_area(a).tolist() == [100, 100, 0]
    iou = box_iou(a, a)
    assert abs(float(iou[0, 1]) - 25 / 175) < 1e-12  # overlap 5x5, union 100 + 100 - 25
    assert float(iou[0, 0]) == 1.0 and float(iou[0, 2]) == 0.0 and float(iou[2, 2]) == 0.0


def test_nms_keeps_best_and_suppresses_overlaps():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 9], [20, 20, 30, 30], [21, 20, 31, 30]])
    scores = torch.tensor([0.5, 0.9, 0.4, 0.3, 0.8])
    # iou(1,0) = 81/119 = 0.68 (kept at 0.7), iou(0,2) = 0.9 (2 dropped), iou(4,3) = 90/110 = 0.82 (3 dropped)
    assert nms(boxes, scores, 0.7).tolist() == [1, 4, 0]
    assert nms(boxes, scores, 0.5).tolist() == [1, 4]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_nms_ties_keep_lower_index():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    assert nms(boxes, torch.tensor([1.0, 1.0]), 0.5).tolist() == [0]


def test_nms_is_greedy_suppression_by_box_iou():
    """Random boxes (empty ones and tied scores included): nms keeps exactly what greedy suppression over the
    full box_iou matrix keeps."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = int(torch.randint(1, 120, (1,), generator=gen))
        xy = torch.randint(0, 40, (n, 2), generator=gen)
        wh = torch.randint(0, 25, (n, 2), generator=gen) * (torch.rand(n, 1, generator=gen) > 0.2)
        boxes = torch.cat([xy, xy + wh], 1).double()
        scores = torch.randint(0, 4, (n,), generator=gen).double() if trial % 2 else torch.rand(n, generator=gen)
        threshold = (0.0, 0.3, 0.7)[trial % 3]
        order = torch.sort(scores, descending=True, stable=True).indices
        over = box_iou(boxes[order], boxes[order]) > threshold
        removed, expected = torch.zeros(n, dtype=torch.bool), []
        for i in range(n):
            if not removed[i]:
                expected.append(int(order[i]))
                removed |= over[i]
        assert nms(boxes, scores, threshold).tolist() == expected, trial


def test_batched_nms_never_suppresses_across_groups():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.1, 0.9, 0.5])
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.5).tolist() == [1, 2]


def test_masks_to_boxes_first_and_last_pixel():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:7] = True
    masks[1, 5, 0] = True
    assert masks_to_boxes(masks).tolist() == [[2, 1, 6, 2], [0, 5, 0, 5], [0, 0, 0, 0]]
