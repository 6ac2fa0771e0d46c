"""ONNX export of samkit_tiny: graphs against PyTorch, int8 agreement, bad input leaves nothing behind."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from samkit.data.datasets import open_dataset
from samkit.errors import SamkitError
from samkit.export import onnx as onnx_export
from samkit.export.onnx import export_onnx, first_click_agreement
from samkit.models.build_sam import SAMKIT_TINY_SIZE
from samkit.predict.onnx_runtime import (
    MANIFEST,
    BrowserGraphs,
    OnnxPredictor,
    OnnxSam,
    sparse_prompt,
)
from samkit.predict.predictor import Predictor
from samkit.predict.transforms import preprocess, scale_coords, upscale_grid

pytestmark = pytest.mark.slow  # every test reads the session's ONNX export (about 30 s)


@pytest.fixture(scope="module")
def model(samkit_tiny_onnx):
    return samkit_tiny_onnx[0]


@pytest.fixture(scope="module")
def exported(samkit_tiny_onnx):
    return samkit_tiny_onnx[1:]


@pytest.fixture(scope="module")
def grabcut(data_dir):
    return open_dataset("grabcut", data_dir / "GrabCut")


def test_export_writes_graphs_and_report(exported):
    out, report = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["encoder.onnx", "decoder.onnx", "decoder_image.onnx", "decoder_lowres.onnx",
                            "decoder_rest.onnx", "encoder.int8.onnx", "decoder.int8.onnx", MANIFEST])
    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["arch"] == "samkit_tiny" and on_disk["img_size"] == SAMKIT_TINY_SIZE
    assert on_disk["low_res"] == SAMKIT_TINY_SIZE // 4
    fp32 = on_disk["validation"]["fp32"]
    assert fp32["logit_max_abs_diff"] < 1e-3 and fp32["mask_pixel_agreement"] >= 0.9999
    assert on_disk["low_res_decoder"]["outputs"] == ["iou_predictions", "low_res_masks", "row_scale", "factors",
                                                     "ct1_factor", "mask_weights"]
    assert on_disk["rest_decoder"]["outputs"] == ["token_masks"]
    image_outputs = on_disk["image_decoder"]["outputs"]
    assert image_outputs[:3] == ["t2i_k", "t2i_v", "i2t_q"] and "ct1" in image_outputs
    assert on_disk["low_res_decoder"]["inputs"] == [*image_outputs, "point_coords", "point_labels", "upscale_grid"]
    low_res = on_disk["validation"]["low_res_decoder"]
    assert low_res["low_res_logit_max_abs_diff"] < 1e-3 and low_res["iou_pred_max_abs_diff"] < 1e-3
    assert low_res["completed_logit_max_abs_diff"] < 1e-3 and low_res["low_res_mask_agreement"] >= 0.9999
    g = SAMKIT_TINY_SIZE // 16
    rows, cols = low_res["upscale_grid"]  # the 640 x 480 sample: a quarter of the rows is padding
    assert cols == g and g * 3 // 4 <= rows < g
    # int8 weights are a quarter of fp32 ones: the quantised graphs are much smaller
    assert (out / "encoder.int8.onnx").stat().st_size < 0.5 * (out / "encoder.onnx").stat().st_size


def test_encoder_round_trip_on_a_real_image(model, exported, grabcut):
    sample = grabcut[0]
    x, _ = preprocess(sample.image, model.img_size)
    with torch.inference_mode():
        expected = model.encode_image(x)
    got = OnnxSam(exported[0]).encode_image(x)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 1e-3


def test_decoder_round_trip_any_number_of_points_box_and_mask(model, exported, grabcut):
    sample = grabcut[1]
    ref, onnx = Predictor(model), OnnxPredictor(exported[0])
    ref.set_image(sample.image)
    onnx.set_image(sample.image)
    h, w = sample.image.shape[:2]
    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0], [w, h], size=(7, 2))
    labels = np.array([1, 0, 1, 1, 0, 1, 0])
    first = ref.predict(points=points[:1], labels=labels[:1])
    prompts = [
        {"points": points, "labels": labels},
        {"points": points[:4], "labels": labels[:4], "box": [w * 0.1, h * 0.2, w * 0.7, h * 0.9], "multimask": False},
        {"box": [w * 0.3, h * 0.1, w * 0.9, h * 0.6]},
        {"points": points[:2], "labels": labels[:2], "mask_input": first.low_res_logits[first.best][None]},
    ]
    for prompt in prompts:
        a, b = ref.predict(**prompt), onnx.predict(**prompt)
        assert b.masks.shape == a.masks.shape == (a.scores.shape[0], h, w)
        assert np.abs(b.low_res_logits - a.low_res_logits).max() < 1e-3
        assert np.abs(b.scores - a.scores).max() < 1e-3
        assert np.mean(b.masks == a.masks) >= 0.9999


@pytest.mark.parametrize("grid", ["read", "full", "odd"])
def test_browser_graphs_are_the_decoder(model, exported, grabcut, grid):
    """The browser's graphs (per image, per click, the rest) give PyTorch's low-res logits and scores, all 4
    outputs, for the tokens asked for (those the upsampling reads, all of them, an arbitrary block), and the
    rest graph completes the grid exactly; with and without a fed-back mask."""
    sample = grabcut[2]
    ref = Predictor(model)
    ref.set_image(sample.image)
    h, w = sample.image.shape[:2]
    g = ref.features.shape[-1]
    rows_cols = {"read": upscale_grid((h, w), ref.input_size, 4 * g, model.img_size, g), "full": (g, g),
                 "odd": (g - 3, 2)}[grid]
    if grid == "read":
        assert rows_cols[0] < g or rows_cols[1] < g  # GrabCut's photos are not square: some padding is skipped
    graphs = BrowserGraphs(exported[0])
    point = np.array([[w * 0.5, h * 0.5]])
    coords, labels = sparse_prompt((torch.from_numpy(scale_coords(point, (h, w), model.img_size)),
                                    torch.tensor([1.0])), None)
    fed = None
    for multimask, sel in ((True, slice(1, 4)), (False, slice(0, 1))):
        expected = ref.predict(points=point, labels=[1], multimask=multimask, mask_input=fed)
        image = graphs.image(ref.features.numpy(), fed)
        out = graphs.click(image, coords, labels, rows_cols)
        iou_pred, low = out["iou_predictions"], out["low_res_masks"]
        assert low.shape == (1, 4, 4 * rows_cols[0], 4 * rows_cols[1])
        want = expected.low_res_logits
        assert np.abs(low[0, sel] - want[:, :low.shape[2], :low.shape[3]]).max() < 1e-3
        assert np.abs(graphs.complete(image, out)[0, sel] - want).max() < 1e-3
        assert np.abs(iou_pred[0, sel] - expected.scores).max() < 1e-3
        fed = want[0][None]  # the next call feeds one of them back


def test_int8_agrees_with_fp32_on_grabcut_first_clicks(model, exported, grabcut):
    ious = first_click_agreement(Predictor(model), OnnxPredictor(exported[0], precision="int8"), grabcut)
    assert len(ious) == 50
    assert ious.mean() >= 0.97, ious.mean()


def test_unknown_model_is_one_line_error_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SamkitError, match="unknown model 'no_such_model'"):
        export_onnx("no_such_model", out)
    assert not out.exists()


def test_unwritable_folder_is_one_line_error(model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SamkitError, match="cannot create output folder"):
        export_onnx(model, blocker / "sub")
    with pytest.raises(SamkitError, match="exists and is not a directory"):
        export_onnx(model, blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_browser_graphs_that_disagree_are_reported(model, tmp_path, monkeypatch):
    """The export checks the browser's graphs as the page runs them: a rest graph gone wrong (every skipped
    token's logits +5) is caught by its validation and warned about."""
    right = onnx_export.RestDecoderGraph.forward
    monkeypatch.setattr(onnx_export.RestDecoderGraph, "forward", lambda self, *a: 0.0 * right(self, *a) + 5.0)
    with pytest.warns(UserWarning, match="browser's decoder graphs agree with PyTorch on only"):
        report = export_onnx(model, tmp_path / "out")
    assert report["validation"]["low_res_decoder"]["low_res_mask_agreement"] < 0.99


def test_failure_midway_leaves_no_partial_files(model, tmp_path, monkeypatch):
    def broken(folder, precision="int8"):
        raise SamkitError("quantiser failed")

    monkeypatch.setattr(onnx_export, "quantize_graphs", broken)
    out = tmp_path / "new"
    with pytest.raises(SamkitError, match="quantiser failed"):
        export_onnx(model, out, quantize="int8")
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("x")
    with pytest.raises(SamkitError):
        export_onnx(model, kept, quantize="int8")
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]


def test_missing_extra_names_the_install_command(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SamkitError, match=r"pip install samkit\[onnx\]"):
        export_onnx(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_bad_quantize_is_refused(model, tmp_path):
    with pytest.raises(SamkitError, match="quantize must be int8"):
        export_onnx(model, tmp_path / "q", quantize="int4")
    assert not (tmp_path / "q").exists()
