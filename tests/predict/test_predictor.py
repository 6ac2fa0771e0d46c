"""Predictor behaviour on a real image: prompt combinations, batching, embeddings, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from samkit.errors import PromptError, SamkitError
from samkit.models.registry import resolve_name
from samkit.predict import predictor as predictor_module
from samkit.predict.predictor import Predictor
from samkit.predict.transforms import upsample_operators


@pytest.fixture(scope="module")
def model(fill_state_dict):
    m = resolve_name("mobile_sam").builder().eval()
    m.load_state_dict(fill_state_dict(m.state_dict()), strict=True)
    return m


@pytest.fixture(scope="module")
def image(data_dir):
    return np.asarray(Image.open(data_dir / "GrabCut" / "data_GT" / "124080.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def pred(model, image):
    p = Predictor(model)
    p.set_image(image)
    return p


def test_prompt_combinations_shapes(pred, image):
    h, w = image.shape[:2]
    cases = [
        dict(points=[[w / 2, h / 2]], labels=[1], multimask=True),
        dict(box=[w / 4, h / 4, 3 * w / 4, 3 * h / 4], multimask=False),
        dict(points=[[w / 2, h / 2], [5, 5]], labels=[1, 0], box=[0, 0, w - 1, h - 1], multimask=False),
    ]
    for kwargs in cases:
        out = pred.predict(**kwargs)
        c = 3 if kwargs["multimask"] else 1
        assert out.masks.shape == (c, h, w) and out.masks.dtype == bool
        assert out.logits.shape == (c, h, w) and out.logits.dtype == np.float32
        assert out.scores.shape == (c,) and out.low_res_logits.shape == (c, 256, 256)
        np.testing.assert_array_equal(out.masks, out.logits > 0)
    first = pred.predict(points=[[w / 2, h / 2]], labels=[1])
    fed = pred.predict(points=[[w / 2, h / 2]], labels=[1], mask_input=first.low_res_logits[first.best][None],
                       multimask=False)
    only_mask = pred.predict(mask_input=first.low_res_logits[first.best], multimask=False)
    assert fed.masks.shape == only_mask.masks.shape == (1, h, w)
    assert not np.allclose(fed.low_res_logits, pred.predict(points=[[w / 2, h / 2]], labels=[1],
                                                             multimask=False).low_res_logits)


def test_batch_equals_single(pred, image):
    h, w = image.shape[:2]
    pts = np.array([[[w * 0.3, h * 0.4]], [[w * 0.6, h * 0.5]]])
    labels = np.ones((2, 1))
    boxes = np.array([[10, 10, w / 2, h / 2], [w / 3, h / 3, w - 5, h - 5]])
    batch = pred.predict_batch(points=pts, labels=labels, boxes=boxes, multimask=True)
    assert batch.masks.shape == (2, 3, h, w) and batch.scores.shape == (2, 3)
    for i in range(2):
        one = pred.predict(points=pts[i], labels=labels[i], box=boxes[i], multimask=True)
        np.testing.assert_allclose(batch.low_res_logits[i], one.low_res_logits, atol=1e-4)
        np.testing.assert_allclose(batch.scores[i], one.scores, atol=1e-5)


def test_embedding_round_trip(pred, model, image, tmp_path):
    h, w = image.shape[:2]
    path = tmp_path / "emb.safetensors"
    pred.save_embedding(path)
    fresh = Predictor(model)
    fresh.load_embedding(path, image_size=(h, w))
    assert fresh.original_size == pred.original_size and fresh.input_size == pred.input_size
    a = pred.predict(points=[[w / 2, h / 2]], labels=[1])
    b = fresh.predict(points=[[w / 2, h / 2]], labels=[1])
    np.testing.assert_array_equal(a.logits, b.logits)
    with pytest.raises(SamkitError, match="is for an image of size"):
        fresh.load_embedding(path, image_size=(h + 1, w))


def test_embedding_errors(model, pred, tmp_path):
    p = Predictor(model)
    with pytest.raises(SamkitError, match="no image set"):
        p.predict(points=[[1, 1]], labels=[1])
    with pytest.raises(SamkitError, match="not found"):
        p.load_embedding(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(SamkitError, match="not a samkit embedding"):
        p.load_embedding(bad)
    path = tmp_path / "emb.safetensors"
    pred.save_embedding(path)
    other = resolve_name("sam_vit_b")
    with torch.device("meta"):
        vit_b = other.builder()
    with pytest.raises(SamkitError, match="computed with 'mobile_sam'"):
        Predictor(vit_b).load_embedding(path)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "no prompt given"),
    (dict(points=[[10, 10]]), "points and labels go together"),
    (dict(points=[[np.nan, 10]], labels=[1]), "NaN"),
    (dict(points=[[10, 10]], labels=[3]), "labels must be 1"),
    (dict(points=[[10, 10], [20, 20]], labels=[1]), "2 points but 1 labels"),
    (dict(points=[[1e5, 10]], labels=[1]), "outside the image"),
    (dict(points=[[-1, 10]], labels=[1]), "outside the image"),
    (dict(points=[[1, 2, 3]], labels=[1]), "shape"),
    (dict(box=[50, 10, 20, 40]), "x1 < x0"),
    (dict(box=[1, 2, 3]), "4 numbers"),
    (dict(box=[0, 0, np.inf, 5]), "NaN or infinite"),
    (dict(mask_input=np.zeros((1, 128, 128))), "mask_input must be low-res logits"),
    (dict(mask_input=np.zeros((3, 256, 256))), "mask_input must be low-res logits"),
    (dict(points="abc", labels=[1]), "numeric"),
])
def test_bad_prompts(pred, kwargs, message):
    with pytest.raises(PromptError, match=message):
        pred.predict(**kwargs)


def test_bad_batches(pred):
    with pytest.raises(PromptError, match="same batch size"):
        pred.predict_batch(points=np.zeros((2, 1, 2)), labels=np.ones((2, 1)), boxes=np.array([[0, 0, 5, 5]] * 3))
    with pytest.raises(PromptError, match=r"\(B,N,2\)"):
        pred.predict_batch(points=np.zeros((1, 2)), labels=np.ones(1))


@pytest.mark.parametrize("spin, first", [("0", 1), ("3000", 2)])
def test_small_decoder_calls_run_on_one_thread_when_threads_sleep_at_once(monkeypatch, image, spin, first):
    """samkit_tiny's 16 x 16 grid: where OpenMP threads sleep at once, one click decodes on one thread (faster than
    two on small operators); with samkit's short spin on every idle CPU. A batch of 8 clicks (2,048 token rows) on
    the adaptive count, a fixed count is kept."""
    import samkit

    monkeypatch.delenv("SAMKIT_THREADS", raising=False)  # adaptive, as users get it
    monkeypatch.setenv("GOMP_SPINCOUNT", spin)  # what default_threads reads (libgomp has read its own)
    monkeypatch.setattr("samkit.runtime.busy_elsewhere", lambda: 0)  # a quiet machine, whatever runs beside
    model = samkit.load_model("samkit_tiny")
    seen: list[int] = []

    def spy(decode):
        def call(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return decode(*args, **kwargs)
        return call

    monkeypatch.setattr(model, "decode", spy(model.decode))  # predict_batch
    monkeypatch.setattr(model, "decode_masks", spy(model.decode_masks))  # predict
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pred = Predictor(model)
        pred.set_image(image)
        pred.predict(points=[[100, 100]], labels=[1])
        pred.predict_batch(points=[[[100 + 10 * i, 100]] for i in range(8)], labels=[[1]] * 8)
        pred.threads = 2  # fixed by the caller
        pred.predict(points=[[100, 100]], labels=[1])
    finally:
        torch.set_num_threads(before)
    assert seen == [first, 2, 2]


@pytest.mark.parametrize("size", [(321, 481), (481, 321), (300, 300)])
def test_predict_upscales_the_padding_only_when_low_res_logits_are_read(model, size, monkeypatch):
    """The full-resolution logits read the tokens of the image's part of the grid: predict() upscales those
    first and the padding's tokens at the first read of ``low_res_logits``; every field equals the plain path
    (predict_low_res + upscale), and feeding the low-res logits back works as before."""
    from samkit.models.mask_decoder import MaskDecoder

    h, w = size
    image = np.random.default_rng(3).integers(0, 255, (h, w, 3), dtype=np.uint8)
    pred = Predictor(model)
    pred.set_image(image)
    tokens: list[int] = []
    upscale = MaskDecoder.upscale_masks

    def spy(self, src, *args, **kwargs):
        tokens.append(src.shape[0] * src.shape[1])
        return upscale(self, src, *args, **kwargs)

    monkeypatch.setattr(MaskDecoder, "upscale_masks", spy)
    points, labels = [[w / 3, h / 2], [5, 5]], [1, 0]
    for multimask in (True, False):
        tokens.clear()
        out = pred.predict(points=points, labels=labels, multimask=multimask)
        grid = 64 * 64
        read = tokens[:]
        low_res = out.low_res_logits  # made now
        assert sum(tokens) == grid and len(tokens) == (1 if h == w else 2)
        if h != w:  # a third of the grid is padding: not upscaled for the full-resolution logits
            assert read[0] <= 2 * grid // 3 + 64
        tokens.clear()
        low, iou = pred.predict_low_res(points=points, labels=labels, multimask=multimask)
        assert tokens == [grid]
        np.testing.assert_allclose(low_res, low.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(out.logits, pred.upscale(low).numpy(), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(out.scores, iou.numpy())
        assert out.masks.shape == (3 if multimask else 1, h, w) and out.low_res_logits is low_res
        again = pred.predict(points=points, labels=labels, mask_input=low_res[:1], multimask=False)
        want = pred.predict_low_res(points=points, labels=labels, mask_input=low.numpy()[:1], multimask=False)[0]
        np.testing.assert_allclose(again.low_res_logits, want.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("factored, split", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("size", [(321, 481), (481, 321)])
def test_decode_confident_image_part_is_the_block_the_upsampling_reads(model, size, factored, split, monkeypatch):
    """decode_confident (segment-everything's batched decoder call, through the factored decoder or the image
    cache, its points split across two threads or not) keeps the masks above the IoU threshold with
    decode_low_res's logits, in prompt order; ``image_part``: the grid's top-left block of image_tokens() only,
    which is all that upsampling to the image reads (the padding's tokens are not upscaled)."""
    monkeypatch.setattr(predictor_module, "FACTORED_MAX_TOKENS", 64 * 64 if factored else 0)
    monkeypatch.setattr(predictor_module, "PART_POINTS", 3 if split else 1000)
    parts: list[int] = []
    real = predictor_module.side_by_side
    monkeypatch.setattr(predictor_module, "side_by_side",
                        lambda work, items, n: parts.append(n) or real(work, items, n))
    h, w = size
    pred = Predictor(model, threads=2)
    pred.set_image(np.random.default_rng(4).integers(0, 255, (h, w, 3), dtype=np.uint8))
    coords = torch.rand(16, 1, 2) * torch.tensor(pred.input_size[::-1], dtype=torch.float32)
    labels = torch.ones(16, 1, dtype=torch.long)
    before = torch.get_num_threads()
    low, iou = pred.decode_low_res((coords, labels))
    best = iou.max(dim=1).values.sort().values
    threshold = float(best[len(best) // 2 - 1:len(best) // 2 + 1].mean())  # between two prompts' best
    rows, cols = pred.image_tokens()
    s = pred.low_res_size()
    assert s == 256 and (rows < 64) == (h < w) and (cols < 64) == (w < h) and max(rows, cols) == 64
    expected = (iou > threshold).nonzero()
    want = low[expected[:, 0], expected[:, 1]]
    for image_part in (False, True):
        kept, kept_iou, index = pred.decode_confident((coords, labels), threshold, image_part=image_part)
        assert torch.equal(index, expected)
        torch.testing.assert_close(kept_iou, iou[expected[:, 0], expected[:, 1]], rtol=0, atol=1e-5)
        block = want[:, :4 * rows, :4 * cols] if image_part else want
        assert kept.shape == block.shape
        torch.testing.assert_close(kept, block, rtol=0, atol=1e-4 * float(block.abs().max()))
    assert ("factored_cache" in pred._caches) == factored
    assert parts == ([2, 2] if split else [])  # once per image_part setting
    assert torch.get_num_threads() == before  # the caller's setting after the workers' single threads
    # the block holds every low-res cell the upsampling to the image reads
    rows_op, cols_op = upsample_operators(pred.original_size, pred.input_size, s, model.img_size)
    assert not rows_op[:, 4 * rows:].any() and not cols_op[:, 4 * cols:].any()
