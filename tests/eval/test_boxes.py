"""Box-prompted mask AP on coco128-seg: GT masks give AP 1, empty masks give 0."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samkit.eval import boxes
from samkit.predict.predictor import Prediction

N_IMAGES = 6


class BoxOracle:
    """predict_batch answers each GT box with that instance's GT mask (or an empty mask)."""

    def __init__(self, coco, empty: bool = False) -> None:
        self.empty, self.calls = empty, []
        self.masks = {}
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann["bbox"]
            self.masks[self.key([x, y, x + w, y + h])] = coco.annToMask(ann).astype(bool)

    @staticmethod
    def key(box) -> tuple:
        return tuple(np.round(np.asarray(box, dtype=np.float64), 3).tolist())

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]
        self.calls.append([])

    def predict_batch(self, points=None, labels=None, boxes=None, mask_input=None, multimask=False) -> Prediction:
        assert multimask is False and points is None
        masks = np.stack([self.masks[self.key(b)] for b in boxes])[:, None]
        if self.empty:
            masks = np.zeros_like(masks)
        assert masks.shape[2:] == self.shape
        self.calls[-1].append(len(boxes))
        n = len(boxes)
        return Prediction(masks, np.where(masks, 5.0, -5.0).astype(np.float32), np.full((n, 1), 0.9, np.float32),
                          np.zeros((n, 1, 256, 256), np.float32))


@pytest.fixture(scope="module")
def coco_path(data_dir):
    return data_dir / "coco128-seg" / "annotations_coco_format.json"


@pytest.fixture(scope="module")
def coco(coco_path):
    return boxes.load_coco(coco_path)


def test_ground_truth_masks_give_ap_one(coco, coco_path):
    oracle = BoxOracle(coco)
    r = boxes.evaluate(oracle, coco_path, coco_path.parent, max_samples=N_IMAGES, batch_size=4)
    ids = sorted(coco.getImgIds())[:N_IMAGES]
    n = len([a for a in coco.loadAnns(coco.getAnnIds(imgIds=ids)) if not a["iscrowd"]])
    assert r["num_images"] == N_IMAGES and r["num_instances"] == n
    assert r["ap"] == pytest.approx(1.0) and r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(1.0)
    assert all(v is None or v == pytest.approx(1.0) for v in (r["ap_small"], r["ap_medium"], r["ap_large"]))
    assert max(max(c) for c in oracle.calls) <= 4  # boxes are sent in chunks of batch_size
    json.dumps(r)


def test_empty_masks_give_ap_zero(coco, coco_path):
    r = boxes.evaluate(BoxOracle(coco, empty=True), coco_path, coco_path.parent, max_samples=3)
    assert r["ap"] == 0.0 and r["ap50"] == 0.0 and r["num_images"] == 3


@pytest.mark.slow
def test_mobile_sam_plumbing(fill_mobile_sam, coco_path):
    from samkit import Predictor

    r = boxes.evaluate(Predictor(fill_mobile_sam), coco_path, coco_path.parent, max_samples=1)
    assert r["num_images"] == 1 and r["num_instances"] >= 1
    assert 0.0 <= r["ap"] <= 1.0
