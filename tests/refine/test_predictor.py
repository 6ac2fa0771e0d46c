"""Predictor(model, refiner=...): refine=True|False, the Prediction fields, embeddings saved and loaded."""
from __future__ import annotations

import numpy as np
import pytest

from samkit.errors import SamkitError
from samkit.predict.predictor import Predictor


def test_refined_prediction_fields(tiny, refiner, grabcut):
    sample = grabcut[3]
    h, w = sample.image.shape[:2]
    pred = Predictor(tiny, refiner=refiner)
    pred.set_image(sample.image)
    out = pred.predict(points=[[w // 2, h // 2]], labels=[1])  # default: refined when there is a refiner
    s = tiny.img_size // 4
    assert out.masks.shape == (3, h, w) and out.masks.dtype == bool
    assert out.logits.shape == (3, h, w) and out.logits.dtype == np.float32
    assert out.scores.shape == (3,) and out.low_res_logits.shape == (3, s, s)
    np.testing.assert_array_equal(out.masks, out.logits > 0)
    nxt = pred.predict(points=[[w // 2, h // 2], [5, 5]], labels=[1, 0], mask_input=out.low_res_logits[out.best][None],
                       multimask=False, refine=True)
    assert nxt.masks.shape == (1, h, w)
    plain = Predictor(tiny)
    plain.set_image(sample.image)
    np.testing.assert_array_equal(pred.predict(points=[[w // 2, h // 2]], labels=[1], refine=False).logits,
                                  plain.predict(points=[[w // 2, h // 2]], labels=[1]).logits)


def test_refine_without_refiner(tiny, grabcut):
    pred = Predictor(tiny)
    pred.set_image(grabcut[0].image)
    with pytest.raises(SamkitError, match="refine=True needs a refiner"):
        pred.predict(points=[[10, 10]], labels=[1], refine=True)


def test_embedding_file_and_refiner(tiny, refiner, grabcut, tmp_path):
    """The refiner's image features are not in the embedding file: they are recomputed from image=."""
    sample = grabcut[4]
    h, w = sample.image.shape[:2]
    pred = Predictor(tiny, refiner=refiner)
    pred.set_image(sample.image)
    first = pred.predict(points=[[w // 2, h // 2]], labels=[1])
    pred.save_embedding(tmp_path / "e.safetensors")
    other = Predictor(tiny, refiner=refiner)
    other.load_embedding(tmp_path / "e.safetensors", image=sample.image)
    np.testing.assert_allclose(other.predict(points=[[w // 2, h // 2]], labels=[1]).logits, first.logits, atol=1e-4)
    other.load_embedding(tmp_path / "e.safetensors")
    with pytest.raises(SamkitError, match="refiner has no image"):
        other.predict(points=[[w // 2, h // 2]], labels=[1])
    assert other.predict(points=[[w // 2, h // 2]], labels=[1], refine=False).masks.shape == (3, h, w)


@pytest.mark.parametrize("name", ["samkit_tiny_ref", "samkit_tiny_ref_hq"])
def test_refined_click_reads_only_the_image_part_of_the_low_res_grid(tiny, grabcut, name):
    """predict() hands the refiner low-res logits whose padding is not computed yet (uninitialised memory):
    the bundled refiners' answers equal their answers on the whole grid (predict_low_res), and the Prediction's
    low_res_logits are the whole grid."""
    import samkit

    refiner = samkit.load_refiner(name)
    sample = grabcut[3]
    h, w = sample.image.shape[:2]
    assert h != w  # a grid with padding
    pred = Predictor(tiny, refiner=refiner)
    pred.set_image(sample.image)
    click = {"points": [[w // 3, h // 2], [5, 5]], "labels": [1, 0]}
    out = pred.predict(**click)
    low, iou = pred.predict_low_res(**click)
    want = refiner.refine(low, np.asarray(click["points"], dtype=np.float64), np.asarray(click["labels"]))
    np.testing.assert_allclose(out.logits, want.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(out.low_res_logits, low.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.scores, iou.numpy())
