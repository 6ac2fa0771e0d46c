"""The RITM click loop: a scripted fake predictor (exact NoC), and MobileSAM plumbing on GrabCut."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samkit import Predictor
from samkit.data.sample import Sample
from samkit.eval import interactive
from samkit.predict.predictor import Prediction

GT = np.zeros((40, 40), bool)
GT[10:30, 10:30] = True  # 20 x 20 object


def prediction(masks: list[np.ndarray], scores: list[float]) -> Prediction:
    m = np.stack(masks).astype(bool)
    low = np.stack([np.full((256, 256), 10.0 * (i + 1) + len(scores), np.float32) for i in range(len(m))])
    return Prediction(m, np.where(m, 10.0, -10.0).astype(np.float32), np.asarray(scores, np.float32), low)


class ScriptedPredictor:
    """Click 1: three masks (empty, left half, whole image) with the left half scored best; click 2:
    the object minus its bottom-right quadrant; click 3 on: the ground truth."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=True) -> Prediction:
        self.calls.append({"points": np.array(points).tolist(), "labels": np.array(labels).tolist(),
                           "mask_input": None if mask_input is None else np.array(mask_input), "multimask": multimask})
        n = len(points)
        if n == 1:
            left = GT.copy()
            left[:, 20:] = False
            return prediction([np.zeros_like(GT), left, np.ones_like(GT)], [0.2, 0.9, 0.1])
        if n == 2:
            most = GT.copy()
            most[20:30, 20:30] = False
            return prediction([most], [0.5])
        return prediction([GT], [0.99])


class EmptyPredictor(ScriptedPredictor):
    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=True) -> Prediction:
        super().predict(points, labels, box, mask_input, multimask)
        return prediction([np.zeros_like(GT)] * (3 if multimask else 1), [0.5] * (3 if multimask else 1))


def test_scripted_loop_noc_is_exactly_three():
    fake = ScriptedPredictor()
    sample = Sample("toy", np.zeros((40, 40, 3), np.uint8), GT[None])
    r = interactive.evaluate(fake, [sample], max_clicks=5)
    assert r["noc"] == {"85": 3.0, "90": 3.0, "95": 3.0}
    assert r["nof"] == {"85": 0, "90": 0, "95": 0}
    assert r["miou_at_k"] == pytest.approx([0.5, 0.75, 1.0, 1.0, 1.0])
    assert r["num_objects"] == 1 and r["num_images"] == 1 and r["skipped_objects"] == 0
    # Clicks [x, y, label]: the object's centre (tie -> (19, 19)); the centre-most missed pixel of the right
    # half (distance 5, first in raster order at y=14, x=24); the missed quadrant's centre (24, 24).
    assert r["objects"][0]["clicks"] == [[19, 19, 1], [24, 14, 1], [24, 24, 1]]
    assert len(fake.calls) == 3  # perfect after click 3: no more clicks, IoU carried to click 5
    assert [c["multimask"] for c in fake.calls] == [True, False, False]
    assert fake.calls[0]["mask_input"] is None
    np.testing.assert_array_equal(fake.calls[1]["mask_input"], np.full((1, 256, 256), 23.0))  # chosen mask 1
    np.testing.assert_array_equal(fake.calls[2]["mask_input"], np.full((1, 256, 256), 11.0))
    assert fake.calls[2]["points"] == [[19, 19], [24, 14], [24, 24]] and fake.calls[2]["labels"] == [1, 1, 1]
    assert r["seconds_per_click"] >= 0 and r["seconds_per_image"] >= 0
    json.dumps(r)


def test_never_reaching_object_counts_max_clicks_and_skips_empty_masks():
    fake = EmptyPredictor()
    masks = np.stack([GT, np.zeros_like(GT)])
    r = interactive.evaluate(fake, [Sample("toy", np.zeros((40, 40, 3), np.uint8), masks)] * 3, max_clicks=4,
                             iou_thresholds=(0.5,), max_samples=2)
    assert r["num_images"] == 2 and r["num_objects"] == 2 and r["skipped_objects"] == 2
    assert r["noc"] == {"50": 4.0} and r["nof"] == {"50": 2}
    assert r["miou_at_k"] == [0.0] * 4
    # The prediction never changes, so each click goes to the next pixel of maximal distance not yet clicked.
    assert r["objects"][0]["clicks"] == [[19, 19, 1], [20, 19, 1], [19, 20, 1], [20, 20, 1]]


def grabcut_sample(data_dir, name: str) -> Sample:
    root = data_dir / "GrabCut"
    image = next(p for p in (root / "data_GT").iterdir() if p.stem == name)
    label = np.asarray(Image.open(root / "boundary_GT" / f"{name}.bmp").convert("L"))
    return Sample(name, np.asarray(Image.open(image).convert("RGB")), (label > 128)[None], ignore=label == 128,
                  source=str(image))


@pytest.mark.slow
def test_mobile_sam_plumbing_on_grabcut(fill_mobile_sam, data_dir, tmp_path):
    from samkit.eval.report import write_report

    samples = [grabcut_sample(data_dir, n) for n in ("124080", "21077")]
    r = interactive.evaluate(Predictor(fill_mobile_sam), samples, max_clicks=3)
    assert r["num_objects"] == 2 and len(r["miou_at_k"]) == 3
    assert all(0.0 <= v <= 1.0 for v in r["miou_at_k"])
    assert all(1.0 <= v <= 3.0 for v in r["noc"].values())
    assert all(len(o["ious"]) == 3 and 1 <= len(o["clicks"]) <= 3 for o in r["objects"])
    paths = write_report(r, tmp_path, "grabcut")
    assert [p.name for p in paths] == ["grabcut.json", "grabcut_miou.png"]
    assert json.loads(paths[0].read_text())["noc"] == r["noc"]
