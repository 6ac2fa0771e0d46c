"""Predictor text prompts (EVF-SAM): predict(text=... / text_tokens=...), batches, combination with
points and boxes, and the errors for bad text input. A tiny EVF layout with random weights (fast)."""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samkit.errors import PromptError, SamkitError
from samkit.models.registry import resolve_name
from samkit.models.text_tokenizer import BOS, EOS
from samkit.predict.predictor import Predictor
from tests.text_models import tiny_evf, train_tokenizer


@pytest.fixture(scope="module")
def pred(tmp_path_factory) -> Predictor:
    model = tiny_evf(train_tokenizer(tmp_path_factory.mktemp("spm")))
    p = Predictor(model)
    p.set_image(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return p


def _same(a, b, atol=1e-5):
    np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=atol, rtol=0)
    np.testing.assert_allclose(a.scores, b.scores, atol=atol, rtol=0)


def test_set_image_keeps_the_beit3_input(pred):
    assert pred.text_image.shape == (1, 3, 224, 224)
    assert float(pred.text_image.min()) >= -1.5 and float(pred.text_image.max()) <= 1.5


def test_text_gives_one_mask_by_default(pred):
    out = pred.predict(text="a dog on the left")
    assert out.masks.shape == (1, 96, 128) and out.scores.shape == (1,)
    assert out.low_res_logits.shape == (1, *pred.model.prompt_encoder.mask_input_size)
    assert pred.predict(text="a dog on the left", multimask=True).masks.shape == (3, 96, 128)
    assert pred.predict(points=[[10, 10]], labels=[1]).masks.shape == (3, 96, 128)  # geometric: 3 by default


def test_text_equals_its_tokens(pred):
    ids = pred.model.tokenize("the man in the red shirt")
    assert ids[0] == BOS and ids[-1] == EOS
    _same(pred.predict(text="the man in the red shirt"), pred.predict(text_tokens=ids), atol=0)


def test_text_changes_the_mask(pred):
    a = pred.predict(text="the man in the red shirt").low_res_logits
    b = pred.predict(text="zebra top left").low_res_logits
    assert np.abs(a - b).max() > 1e-3


def test_text_with_points_and_box(pred):
    text_only = pred.predict(text="a dog on the left")
    with_point = pred.predict(text="a dog on the left", points=[[30, 40]], labels=[1])
    with_box = pred.predict(text="a dog on the left", box=[10, 10, 60, 70])
    assert with_point.masks.shape == with_box.masks.shape == (1, 96, 128)
    assert np.abs(with_point.low_res_logits - text_only.low_res_logits).max() > 1e-4
    assert np.abs(with_box.low_res_logits - text_only.low_res_logits).max() > 1e-4
    batch = pred.predict_batch(texts=["a dog on the left", "zebra top left"], boxes=[[10, 10, 60, 70]] * 2)
    _same(_row(batch, 0), with_box)


def _row(batch, i: int) -> SimpleNamespace:
    """Entry i of a predict_batch result, with the fields _same compares."""
    return SimpleNamespace(low_res_logits=batch.low_res_logits[i], scores=batch.scores[i])


def test_batched_texts_share_one_image_and_one_text_pass(pred, monkeypatch):
    texts = ["a dog on the left", "the small red circle left of the blue square", "sky"]
    single = [pred.predict(text=t) for t in texts]
    calls = []
    beit3 = pred.model.beit3
    original = beit3.forward

    def counting(*args, **kwargs):
        calls.append(args[1].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(beit3, "forward", counting)
    features = pred.features
    batch = pred.predict_batch(texts=texts)
    assert len(calls) == 1 and calls[0][0] == 3  # one BEiT-3 pass over the padded batch
    assert pred.features is features  # the image embedding is not recomputed
    assert batch.masks.shape == (3, 1, 96, 128)
    for i, one in enumerate(single):
        _same(_row(batch, i), one)
    tokens = pred.predict_batch(text_tokens=[pred.model.tokenize(t) for t in texts])
    np.testing.assert_allclose(tokens.low_res_logits, batch.low_res_logits, atol=1e-6)


def test_too_long_text_is_truncated_with_a_warning(pred):
    limit = pred.model.max_text_tokens
    long_ids = [BOS, *range(10, 10 + limit + 4), EOS]
    with pytest.warns(UserWarning, match=f"more than the model's limit of {limit}: truncated"):
        out = pred.predict(text_tokens=long_ids)
    _same(out, pred.predict(text_tokens=[*long_ids[:limit - 1], EOS]), atol=0)
    with pytest.warns(UserWarning, match="truncated"):
        pred.predict(text="the small red circle left of the blue square " * 4)


@pytest.mark.parametrize("kwargs, needle", [
    ({"text": ""}, "text prompt is empty"),
    ({"text": "   "}, "text prompt is empty"),
    ({"text": 42}, "must be a string"),
    ({"text": "\u200b"}, "gives no tokens"),  # not whitespace to str.strip, but no sentencepiece piece
    ({"text": "\u200b\u200b "}, "gives no tokens"),
    ({"text_tokens": [0, 5, 2], "semantic": True}, "with text_tokens"),
    ({"text": "dog", "text_tokens": [0, 5, 2]}, "not both"),
    ({"text_tokens": []}, "non-empty 1-D"),
    ({"text_tokens": [[0, 5, 2]]}, "non-empty 1-D"),
    ({"text_tokens": [0, 1.5, 2]}, "integers"),
    ({"text_tokens": [0, 64010, 2]}, "outside the vocabulary"),
    ({"text_tokens": [0, -1, 2]}, "outside the vocabulary"),
])
def test_bad_text_input(pred, kwargs, needle):
    with pytest.raises(PromptError, match=needle):
        pred.predict(**kwargs)


def test_bad_batched_text_input(pred):
    with pytest.raises(PromptError, match="list of sentences"):
        pred.predict_batch(texts="a dog")
    with pytest.raises(PromptError, match="same batch size"):
        pred.predict_batch(texts=["a dog", "sky"], boxes=[[0, 0, 5, 5]] * 3)
    with pytest.raises(PromptError, match="list of texts is empty"):
        pred.predict_batch(texts=[])


def test_semantic_prefix_on_a_model_not_trained_for_it_warns(pred):
    with pytest.warns(UserWarning, match=r"not trained with the '\[semantic\] ' prefix"):
        out = pred.predict(text="sky", semantic=True)
    _same(out, pred.predict(text_tokens=pred.model.tokenizer.encode("[semantic] sky")), atol=0)
    with pytest.warns(UserWarning, match="not trained"), pytest.raises(PromptError, match="gives no tokens"):
        pred.predict(text="\u200b", semantic=True)  # the prefix's own tokens do not make the text non-empty
    with pytest.raises(PromptError, match="with text_tokens"):
        pred.predict_batch(text_tokens=[[0, 5, 2]], semantic=True)


def test_model_without_text_encoder():
    model = resolve_name("samkit_tiny").builder().eval()
    p = Predictor(model)
    p.set_image(np.zeros((32, 32, 3), dtype=np.uint8))
    assert p.text_image is None
    for kwargs in ({"text": "a dog"}, {"text_tokens": [0, 5, 2]}):
        with pytest.raises(PromptError, match="'samkit_tiny' has no text encoder.*evf_sam"):
            p.predict(**kwargs)
    with pytest.raises(PromptError, match="has no text encoder"):
        p.predict_batch(texts=["a dog"])


def test_model_without_tokenizer_takes_tokens_only():
    p = Predictor(tiny_evf())
    p.set_image(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(PromptError, match="has no tokenizer.*sentencepiece.bpe.model"):
        p.predict(text="a dog")
    assert p.predict(text_tokens=[0, 5, 2]).masks.shape == (1, 32, 32)


def test_text_after_load_embedding_needs_the_image(pred, tmp_path):
    path = tmp_path / "emb.safetensors"
    pred.save_embedding(path)
    p = Predictor(pred.model)
    p.load_embedding(path)
    assert p.predict(points=[[10, 10]], labels=[1]).masks.shape == (3, 96, 128)
    with pytest.raises(SamkitError, match="text prompts need the image itself: call set_image"):
        p.predict(text="a dog")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.set_image(np.zeros((96, 128, 3), dtype=np.uint8))
    assert p.predict(text="a dog").masks.shape == (1, 96, 128)


def test_load_embedding_with_the_image_takes_text(pred, tmp_path):
    path = tmp_path / "emb.safetensors"
    pred.save_embedding(path)
    p = Predictor(pred.model)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)  # the fixture's image
    p.load_embedding(path, image=image)
    _same(p.predict(text="a dog"), pred.predict(text="a dog"))
    with pytest.raises(SamkitError, match=r"image of size \(64, 64\)"):
        p.load_embedding(path, image=np.zeros((64, 64, 3), dtype=np.uint8))


def test_text_prompt_token_is_appended_after_the_geometric_prompts(pred):
    """Same result as decoding by hand with the projected CLS as the last sparse token."""
    ids = torch.tensor([pred.model.tokenize("a dog on the left")])
    with torch.inference_mode():
        token = pred.model.text_prompt(pred.text_image, ids)
        sparse, dense = pred.model.prompt_encoder(None, None, None)
        assert sparse.shape == (1, 0, 256)  # text alone: no padding point
        low, iou = pred.model.mask_decoder(pred.features, pred.model.dense_pe(), torch.cat([sparse, token], 1),
                                           dense, False)
    out = pred.predict(text="a dog on the left")
    np.testing.assert_allclose(out.low_res_logits, low[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out.scores, iou[0].numpy(), atol=1e-5)
