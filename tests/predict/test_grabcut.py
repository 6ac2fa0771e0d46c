"""The classical baseline: OpenCV GrabCut behind the predictor interface, on real GrabCut photos."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samkit.cli import main
from samkit.data.readers import open_dataset
from samkit.errors import PromptError
from samkit.eval.clicks import interior_point
from samkit.eval.interactive import evaluate
from samkit.eval.metrics import iou
from samkit.predict.grabcut import GrabCutPredictor


@pytest.fixture(scope="module")
def grabcut(data_dir):
    return open_dataset("grabcut", data_dir / "GrabCut")


def test_first_click_segments_the_object_and_is_deterministic(grabcut):
    sample = grabcut[0]
    gt = sample.masks[0]
    click = interior_point(gt, sample.ignore)
    pred = GrabCutPredictor()
    pred.set_image(sample.image)
    out = pred.predict(points=np.array([[click.x, click.y]]), labels=np.array([1]), multimask=True)
    assert out.masks.shape == (1, *gt.shape) and out.scores.shape == (1,)
    assert out.low_res_logits.shape == (1, *gt.shape)
    first = iou(out.masks[0], gt, sample.ignore)
    # a disk of 10 % of the diagonal at the click, what GrabCut starts from
    yy, xx = np.mgrid[:gt.shape[0], :gt.shape[1]]
    disk = (xx - click.x) ** 2 + (yy - click.y) ** 2 <= (0.1 * np.hypot(*gt.shape)) ** 2
    assert first > iou(disk, gt, sample.ignore) + 0.05
    again = pred.predict(points=np.array([[click.x, click.y]]), labels=np.array([1]))
    assert np.array_equal(again.masks, out.masks)


def test_clicks_improve_grabcut_under_the_interactive_protocol(grabcut):
    result = evaluate(GrabCutPredictor(), grabcut, max_clicks=4, max_samples=3)
    miou = result["miou_at_k"]
    assert result["num_objects"] == 3
    assert miou[0] > 0.4
    assert miou[-1] >= miou[0]


def test_bad_input_gives_clear_errors(grabcut):
    pred = GrabCutPredictor()
    with pytest.raises(PromptError, match="set_image"):
        pred.predict(points=np.array([[10, 10]]), labels=np.array([1]))
    pred.set_image(grabcut[0].image)
    with pytest.raises(PromptError, match="at least one point or a box"):
        pred.predict()
    with pytest.raises(PromptError, match="labels"):
        pred.predict(points=np.array([[10, 10], [20, 20]]), labels=np.array([1]))
    with pytest.raises(PromptError, match="mask_input"):
        pred.predict(points=np.array([[10, 10]]), labels=np.array([1]), mask_input=np.zeros((1, 64, 64)))


def test_cli_evaluates_the_baseline(data_dir, tmp_path, capsys):
    code = main(["eval", "interactive", "--dataset", "grabcut", "--root", str(data_dir / "GrabCut"),
                 "--model", "opencv_grabcut", "--max-samples", "1", "--max-clicks", "2", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "interactive.json").read_text())
    assert result["model"] == "opencv_grabcut" and result["num_objects"] == 1
    assert main(["eval", "boxes", "--coco-json", "x.json", "--images", ".", "--model", "opencv_grabcut",
                 "--out", str(tmp_path / "b")]) == 2
    assert "answers clicks" in capsys.readouterr().err
