"""OnnxPredictor: the ONNX Runtime path gives the torch Predictor's Prediction fields and checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit.errors import PromptError, SamkitError
from samkit.predict.onnx_runtime import MANIFEST, OnnxPredictor
from samkit.predict.predictor import Prediction, Predictor

pytestmark = pytest.mark.slow  # every test reads the session's ONNX export (about 30 s)


@pytest.fixture(scope="module")
def model(samkit_tiny_onnx):
    return samkit_tiny_onnx[0]


@pytest.fixture(scope="module")
def folder(samkit_tiny_onnx):
    return samkit_tiny_onnx[1]


@pytest.fixture(scope="module")
def image(data_dir):
    return data_dir / "GrabCut" / "data_GT" / "124080.jpg"


@pytest.fixture(scope="module")
def pair(model, folder, image):
    ref, onnx = Predictor(model), OnnxPredictor(folder, threads=1)
    ref.set_image(image)
    onnx.set_image(image)
    return ref, onnx


def _same_fields(a: Prediction, b: Prediction) -> None:
    for name in ("masks", "logits", "scores", "low_res_logits"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
    assert np.mean(a.masks == b.masks) >= 0.9999
    assert np.abs(a.low_res_logits - b.low_res_logits).max() < 1e-3


def test_same_prediction_fields_as_torch(pair):
    ref, onnx = pair
    assert onnx.original_size == ref.original_size and onnx.input_size == ref.input_size
    h, w = ref.original_size
    for prompt in ({"points": [[w / 2, h / 2]], "labels": [1]},
                   {"points": [[w / 2, h / 2]], "labels": [1], "multimask": False},
                   {"box": [10, 20, w - 30, h - 10]}):
        _same_fields(ref.predict(**prompt), onnx.predict(**prompt))


def test_batch_prompts(pair):
    ref, onnx = pair
    boxes = np.array([[10, 10, 200, 150], [120, 40, 400, 300]])
    a, b = ref.predict_batch(boxes=boxes), onnx.predict_batch(boxes=boxes)
    assert b.masks.shape[:2] == (2, 1)
    _same_fields(a, b)


def test_embedding_file_from_torch_is_usable(pair, folder, image, tmp_path):
    ref, onnx = pair
    path = tmp_path / "img.emb.safetensors"
    ref.save_embedding(path)
    other = OnnxPredictor(folder)
    other.load_embedding(path)
    point = {"points": [[100, 100]], "labels": [1]}
    _same_fields(ref.predict(**point), other.predict(**point))


def test_prompt_checks_are_the_predictors(pair):
    _, onnx = pair
    with pytest.raises(PromptError, match="outside the image"):
        onnx.predict(points=[[1e6, 5]], labels=[1])
    with pytest.raises(SamkitError, match="text encoder"):
        onnx.predict(text="the dog")


def test_bad_folder_and_missing_precision(folder, tmp_path):
    with pytest.raises(SamkitError, match="not a samkit ONNX export folder"):
        OnnxPredictor(tmp_path)
    (tmp_path / MANIFEST).write_text((folder / MANIFEST).read_text())
    with pytest.raises(SamkitError, match=r"no encoder.onnx, decoder.onnx"):
        OnnxPredictor(tmp_path)
    with pytest.raises(SamkitError, match=r"no encoder.int8.onnx, decoder.int8.onnx \(export with --quantize int8\)"):
        OnnxPredictor(tmp_path, precision="int8")
    with pytest.raises(SamkitError, match="precision must be one of fp32, int8"):
        OnnxPredictor(folder, precision="fp16")


def test_decode_confident_on_both_runtimes(pair):
    """Segment-everything's first filter: torch computes only the kept masks, onnxruntime decodes all and filters;
    both keep the same ones."""
    ref, onnx = pair
    rng = np.random.default_rng(0)
    coords = torch.from_numpy(rng.uniform(0, ref.model.img_size * 0.6, (16, 1, 2))).float()
    labels = torch.ones(16, 1, dtype=torch.long)
    _, iou = ref.decode_low_res((coords, labels))
    ranked = iou.flatten().sort().values
    # halfway across the widest gap between neighbouring IoUs in the middle half: the runtimes' last-digit
    # differences cannot cross it
    gaps = ranked[1:] - ranked[:-1]
    quarter = len(ranked) // 4
    i = quarter + int(gaps[quarter:3 * quarter].argmax())
    threshold = float(ranked[i] + ranked[i + 1]) / 2
    (a_low, a_iou, a_index), (b_low, b_iou, b_index) = (p.decode_confident((coords, labels), threshold)
                                                        for p in (ref, onnx))
    assert torch.equal(a_index, (iou > threshold).nonzero())
    assert torch.equal(a_index, b_index)
    assert a_low.shape == b_low.shape == (len(a_index), *ref.model.prompt_encoder.mask_input_size)
    assert (a_iou - b_iou).abs().max() < 1e-3 and (a_low - b_low).abs().max() < 1e-2
