"""`samkit export onnx` and `--runtime onnxruntime`: real exports, one-line errors, nothing left behind."""
from __future__ import annotations

import json

import pytest

from samkit.cli.models import SAMPLE_IMAGE
from samkit.predict.onnx_runtime import MANIFEST
from tests.cli_helpers import POINT, assert_error, run_cli


@pytest.mark.slow
def test_export_onnx_writes_graphs_and_report(tmp_path):
    out = tmp_path / "tiny"
    result = run_cli("export", "onnx", "samkit_tiny", "--out", out, "--opset", 17)
    assert result.code == 0, result
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "decoder_image.onnx", "decoder_lowres.onnx",
                                                     "decoder_rest.onnx", "encoder.onnx", MANIFEST]
    report = json.loads((out / MANIFEST).read_text())
    assert report["opset"] == 17 and report["validation"]["fp32"]["mask_pixel_agreement"] >= 0.9999
    assert "fp32: max |logit diff|" in result.out
    assert "browser graphs (decoder_lowres.onnx ...): max |low-res logit diff|" in result.out


@pytest.mark.parametrize("args, needle", [
    (("no_such_model",), "unknown model 'no_such_model'"),
    (("samkit_tiny", "--checkpoint", "missing.pth"), "checkpoint not found"),
])
def test_export_bad_model_is_one_line_error(tmp_path, args, needle):
    out = tmp_path / "out"
    assert_error(run_cli("export", "onnx", *args, "--out", out), out, needle)
    assert not out.exists()


def test_export_to_unwritable_place_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_error(run_cli("export", "onnx", "samkit_tiny", "--out", blocker / "sub"), blocker / "sub", "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.slow
def test_segment_with_onnxruntime_int8_from_an_export_folder(samkit_tiny_onnx, tmp_path):
    folder = samkit_tiny_onnx[1]
    out = tmp_path / "seg"
    result = run_cli("segment", SAMPLE_IMAGE, "--point", POINT, "--model", folder, "--runtime", "onnxruntime",
                     "--precision", "int8", "--out", out)
    assert result.code == 0, result
    doc = json.loads((out / "masks.json").read_text())
    assert doc["annotations"] and (out / "overlay.png").is_file()


def test_int8_needs_onnxruntime(tmp_path):
    out = tmp_path / "seg"
    assert_error(run_cli("segment", SAMPLE_IMAGE, "--point", POINT, "--precision", "int8", "--out", out), out,
                 "--precision int8 needs --runtime onnxruntime")
