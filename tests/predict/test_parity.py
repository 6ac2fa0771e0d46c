"""End-to-end parity with the reference SAM / MobileSAM predictor (shared/parity fixtures).

Tolerances from shared/parity/README.md: features and low-res logits within 1e-3, IoU within 1e-3,
full-resolution mask logits agree in sign on >= 99.99 % of pixels.
"""
from __future__ import annotations

import numpy as np
import pytest

from samkit.models.registry import resolve_name
from samkit.predict.predictor import Predictor

pytestmark = pytest.mark.slow  # full-size SAM models against the reference outputs: minutes on 2 CPUs

CASES = ["point1", "points3", "box", "box_point", "refine", "batch_boxes"]
FIXTURES = {"sam_vit_b": "sam_vit_b.npz", "mobile_sam": "mobile_sam_vit_t.npz"}


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def setup(request, parity_dir, fill_state_dict):
    name = request.param
    ref = dict(np.load(parity_dir / FIXTURES[name]))
    model = resolve_name(name).builder().eval()
    model.load_state_dict(fill_state_dict(model.state_dict()), strict=True)
    pred = Predictor(model)
    pred.set_image(ref["image"])
    return pred, ref


def test_features(setup):
    pred, ref = setup
    assert pred.input_size == tuple(ref["input_size"])
    assert pred.original_size == tuple(ref["original_size"])
    assert np.abs(pred.features.numpy() - ref["features"]).max() <= 1e-3


@pytest.mark.parametrize("case", CASES)
def test_prompt_case(setup, case):
    pred, ref = setup

    def arg(key):
        return ref.get(f"{case}.in.{key}")

    multimask = bool(arg("multimask_output"))
    if case == "batch_boxes":
        out = pred.predict_batch(boxes=arg("boxes"), multimask=multimask)
    else:
        out = pred.predict(points=arg("point_coords"), labels=arg("point_labels"), box=arg("box"),
                           mask_input=arg("mask_input"), multimask=multimask)
    want_logits = ref[f"{case}.out.mask_logits"].astype(np.float32)
    assert out.logits.shape == want_logits.shape
    assert out.masks.dtype == bool and out.masks.shape == want_logits.shape
    assert np.abs(out.low_res_logits - ref[f"{case}.out.low_res_logits"]).max() <= 1e-3
    assert np.abs(out.scores - ref[f"{case}.out.iou_predictions"]).max() <= 1e-3
    assert ((out.logits > 0) == (want_logits > 0)).mean() >= 0.9999
