"""SAM's single-point protocol with a fake predictor whose three masks have known IoUs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samkit.data.sample import Sample
from samkit.eval import single_point
from samkit.predict.predictor import Prediction


class ThreeMasks:
    """For any click: mask 0 = the object's part in the image's top half (scored best), mask 1 = the
    object, mask 2 = everything."""

    def __init__(self, gt: np.ndarray) -> None:
        self.gt, self.points = gt, []

    def set_image(self, image: np.ndarray) -> None:
        assert image.shape[:2] == self.gt.shape

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=True) -> Prediction:
        assert multimask and mask_input is None and list(labels) == [1]
        self.points.append(np.asarray(points).tolist())
        top = self.gt.copy()
        top[self.gt.shape[0] // 2:] = False
        masks = np.stack([top, self.gt, np.ones_like(self.gt)])
        return Prediction(masks, np.where(masks, 9.0, -9.0).astype(np.float32), np.array([0.9, 0.8, 0.1]),
                          np.zeros((3, 256, 256), np.float32))


def test_scored_and_oracle_miou():
    gt = np.zeros((20, 20), bool)
    gt[4:16, 2:12] = True  # 12 x 10: rows 4..15, cols 2..11; top half = rows 4..9 (60 of 120 px)
    ignore = np.zeros_like(gt)
    ignore[0, :] = True  # a false positive row of "everything" that is not counted
    fake = ThreeMasks(gt)
    r = single_point.evaluate(fake, [Sample("a", np.zeros((20, 20, 3), np.uint8), gt[None], ignore)])
    # Interior point: distance min(y - 3, 16 - y, x - 1, 12 - x) is 5 at x = 6 (and 7), rows 8..11 -> (x=6, y=8).
    assert fake.points == [[[6, 8]]]
    o = r["objects"][0]
    assert o["point"] == [6, 8] and o["chosen"] == 0
    assert o["ious"] == pytest.approx([60 / 120, 1.0, 120 / 380])  # 400 px minus the 20 ignored
    assert r["miou"] == pytest.approx(0.5) and r["miou_oracle"] == pytest.approx(1.0)
    json.dumps(r)


def test_several_objects_and_max_samples():
    gt = np.zeros((2, 20, 20), bool)
    gt[0, 4:16, 2:12] = True
    gt[1, 8:12, 14:18] = True  # 4 x 4 across the middle row: half of it in the image's top half
    image = np.zeros((20, 20, 3), np.uint8)

    class PerObject(ThreeMasks):
        def predict(self, points=None, **kw):
            x, y = np.asarray(points)[0]
            self.gt = gt[0] if gt[0][int(y), int(x)] else gt[1]
            return super().predict(points=points, **kw)

    samples = [Sample("a", image, gt), Sample("b", image, gt[:1])]
    r = single_point.evaluate(PerObject(gt[0]), samples, max_samples=1)
    assert r["num_images"] == 1 and r["num_objects"] == 2
    assert [o["iou"] for o in r["objects"]] == pytest.approx([0.5, 0.5])
    assert r["miou"] == pytest.approx(0.5) and r["miou_oracle"] == pytest.approx(1.0)
