"""``samkit segment IMAGE --text``: text prompts from the command line (a tiny EVF-SAM checkpoint directory
with random weights and a small trained tokenizer: masks are meaningless but reproducible)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from samkit.cli.models import SAMPLE_IMAGE
from samkit.models.evf_load import save_evf_directory
from samkit.predict.predictor import Predictor
from tests.cli_helpers import assert_error, read_masks, run_cli
from tests.data.refer_toolkit import toolkit_copy
from tests.text_models import tiny_evf, train_tokenizer


@pytest.fixture(scope="module")
def evf_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evf")
    model = tiny_evf(train_tokenizer(root))
    return save_evf_directory(model, root / "ckpt")


@pytest.mark.slow
def test_segment_with_text(tmp_path, evf_dir):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--text", "a dog on the left", "--checkpoint", evf_dir, "--out", out)
    assert result.code == 0, result
    doc, masks = read_masks(out)
    assert doc["model"] == "evf_sam" and len(masks) == 1 and (out / "overlay.png").is_file()
    assert doc["prompts"]["text"] == "a dog on the left" and doc["prompts"]["semantic"] is False
    pred = Predictor(tiny_evf(evf_dir / "sentencepiece.bpe.model"))
    pred.set_image(SAMPLE_IMAGE)
    want = pred.predict(text="a dog on the left")
    assert doc["annotations"][0]["predicted_iou"] == pytest.approx(float(want.scores[0]), abs=1e-5)
    assert (masks[0] == want.masks[0]).mean() > 0.999


@pytest.mark.slow
def test_segment_text_with_point_and_semantic(tmp_path, evf_dir):
    out = tmp_path / "out"
    result = run_cli("segment", SAMPLE_IMAGE, "--text", "sky", "--semantic", "--point", "320,240",
                     "--model", "evf_sam_multitask", "--checkpoint", evf_dir, "--out", out)
    assert result.code == 0, result
    doc, masks = read_masks(out)
    assert doc["model"] == "evf_sam_multitask" and doc["prompts"]["semantic"] is True and len(masks) == 1


def test_text_errors(tmp_path, evf_dir):
    out = tmp_path / "out"
    assert_error(run_cli("segment", SAMPLE_IMAGE, "--text", " ", "--checkpoint", evf_dir, "--out", out),
                 out, "--text is empty")
    assert_error(run_cli("segment", SAMPLE_IMAGE, "--point", "1,1", "--semantic", "--out", out),
                 out, "--semantic goes with --text")
    assert_error(run_cli("segment", SAMPLE_IMAGE, "--text", "a dog", "--model", "samkit_tiny", "--out", out),
                 out, "'samkit_tiny' has no text encoder")
    assert_error(run_cli("segment", SAMPLE_IMAGE, "--out", out), out, "--text SENTENCE")


def test_eval_refer_defaults_to_the_bundled_text_model(tmp_path, data_dir):
    import json

    out = tmp_path / "refer.json"
    result = run_cli("eval", "refer", "--refs", data_dir / "refcoco_coco128_subset" / "refs.json", "--limit", 4,
                     "--out", out)
    assert result.code == 0, result
    doc = json.loads(out.read_text())
    assert doc["model"] == "samkit_tiny_text" and doc["num_expressions"] == 4
    assert 0.0 <= doc["ciou"] <= 1.0 and 0.0 <= doc["giou"] <= 1.0


def test_eval_refer_reads_refer_toolkit_files_with_split_and_image_root(tmp_path, data_dir):
    subset = data_dir / "refcoco_coco128_subset"
    path = toolkit_copy(subset, tmp_path / "refcoco")
    split = json.loads((subset / "refs.json").read_text())[0]["split"]
    out = tmp_path / "r.json"
    result = run_cli("eval", "refer", "--refs", path, "--images", subset / "images", "--split", split,
                     "--limit", 2, "--out", out)
    assert result.code == 0, result
    assert json.loads(out.read_text())["num_expressions"] == 2
    result = run_cli("eval", "refer", "--refs", path, "--split", split, "--out", tmp_path / "no")  # no --images
    assert result.code == 2 and "image file not found" in result.err and not (tmp_path / "no").exists()
