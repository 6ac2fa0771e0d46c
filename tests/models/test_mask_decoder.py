"""samkit.models.mask_decoder / transformer: the fast paths equal the plain formulation."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from samkit.models.registry import resolve_name


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    d = resolve_name("sam_vit_b").builder().mask_decoder.eval()
    with torch.no_grad():  # random, non-trivial norms and biases
        for p in d.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return d


@pytest.mark.parametrize("batch,grid", [(1, 64), (3, 64), (5, 16), (3, 32), (2, 8)])
def test_upscale_masks_equals_transposed_convolutions(decoder, batch, grid):
    torch.manual_seed(1)
    src = torch.randn(batch, grid * grid, 256)
    hyper = torch.randn(batch, 4, 32)
    image = src.transpose(1, 2).reshape(batch, 256, grid, grid)
    with torch.no_grad():
        up = decoder.output_upscaling(image)  # (B, 32, 4g, 4g)
        ref = (hyper @ up.flatten(2)).view(batch, 4, 4 * grid, 4 * grid)
        out = decoder.upscale_masks(src, hyper, grid, grid)
        whole = decoder.upscale_masks(src, hyper, grid, grid, step_tokens=grid * grid)  # as exported
        small = decoder.upscale_masks(src, hyper, grid, grid, step_tokens=7)  # uneven steps
    assert out.shape == ref.shape
    if grid == 64:  # a large chain: its two products run on oneDNN (samkit.models.common.dense)
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            decoder.upscale_masks(src, hyper, grid, grid)
        assert "mkldnn::_linear_pointwise" in {event.key for event in prof.key_averages()}
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(whole, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(small, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch,points", [(1, 1), (1, 3), (4, 2), (2, 20)])  # 20 points: the general attention
def test_image_cache_gives_the_same_decoding(batch, points):
    """The cache's first-block projections and its encoding products (the later blocks and the final attention
    never add the encoding to the image tokens) give the plain decoding."""
    torch.manual_seed(2)
    model = resolve_name("sam_vit_b").builder().eval()
    with torch.no_grad():
        for p in model.mask_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    emb = torch.randn(1, 256, 64, 64)
    coords = torch.rand(batch, points, 2) * 1024
    labels = torch.randint(0, 2, (batch, points))
    with torch.inference_mode():
        cache = model.decoder_cache(emb)
        assert [tuple(t.shape) for t in cache.pe_proj] == [(8, 16, 4096)] * 3  # block 2's two, the final one
        plain = model.decode(emb, points=(coords, labels))
        cached = model.decode(emb, points=(coords, labels), cache=cache)
        # a mask input makes the dense embedding prompt-dependent: the cache is not used then
        mask = torch.randn(batch, 1, 256, 256)
        with_mask = model.decode(emb, points=(coords, labels), mask_input=mask, cache=cache)
        with_mask_plain = model.decode(emb, points=(coords, labels), mask_input=mask)
    for a, b in zip(cached, plain, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(with_mask, with_mask_plain, strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_image_cache_holds_one_image():
    model = resolve_name("sam_vit_b").builder().eval()
    with pytest.raises(ValueError, match="one image"):
        model.decoder_cache(torch.zeros(2, 256, 64, 64))


def test_final_attention_for_the_output_tokens_only(decoder):
    """n_out: the first tokens' outputs are those of the whole run; the image side is untouched."""
    torch.manual_seed(3)
    image, pe = torch.randn(3, 256, 16, 16), torch.randn(1, 256, 16, 16)
    tokens = torch.randn(3, 8, 256)
    with torch.inference_mode():
        full_tokens, full_image = decoder.transformer(image, pe, tokens)
        some_tokens, some_image = decoder.transformer(image, pe, tokens, n_out=5)
    assert some_tokens.shape == (3, 5, 256)
    torch.testing.assert_close(some_tokens, full_tokens[:, :5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(some_image, full_image, rtol=0, atol=0)


@pytest.fixture(scope="module")
def sam_b():
    torch.manual_seed(4)
    model = resolve_name("sam_vit_b").builder().eval()
    with torch.no_grad():  # spread the predicted IoUs so that a threshold splits the prompts
        for p in model.mask_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("multimask", [True, False])
def test_decode_confident_is_decode_filtered_by_iou_and_skips_upscaling(sam_b, multimask, monkeypatch):
    torch.manual_seed(5)
    emb = torch.randn(1, 256, 64, 64)
    coords, labels = torch.rand(12, 1, 2) * 1024, torch.ones(12, 1, dtype=torch.long)
    with torch.inference_mode():
        cache = sam_b.decoder_cache(emb)
        low, iou = sam_b.decode(emb, points=(coords, labels), multimask_output=multimask, cache=cache)
        best = iou.max(dim=1).values
        threshold = float(best.median())  # about half of the prompts have no mask above it
        upscaled = []
        real = sam_b.mask_decoder.upscale_masks
        monkeypatch.setattr(sam_b.mask_decoder, "upscale_masks",
                            lambda src, *a: upscaled.append(len(src)) or real(src, *a))
        kept, kept_iou, index = sam_b.decode_confident(emb, threshold, points=(coords, labels),
                                                       multimask_output=multimask, cache=cache)
    expected = (iou > threshold).nonzero()
    assert 0 < len(expected) < iou.numel()
    assert torch.equal(index, expected)
    torch.testing.assert_close(kept_iou, iou[expected[:, 0], expected[:, 1]], rtol=0, atol=0)
    torch.testing.assert_close(kept, low[expected[:, 0], expected[:, 1]], rtol=1e-5, atol=1e-4)
    assert upscaled == [int((best > threshold).sum())]  # only the prompts with a kept mask were upscaled


@pytest.mark.parametrize("grid", [None, (43, 64), (64, 30)])
@pytest.mark.parametrize("multimask", [True, False])
def test_decode_confident_with_the_factored_cache_is_decode_filtered_by_iou(sam_b, multimask, grid):
    """Sam.decode_confident with factored_cache (FactoredDecoder run on a batch of prompt sets: points and boxes)
    keeps the masks decoder_cache's path keeps, with the same logits; ``grid``: the top-left block of them."""
    torch.manual_seed(6)
    emb = torch.randn(1, 256, 64, 64)
    coords, labels = torch.rand(10, 2, 2) * 1024, torch.randint(0, 2, (10, 2))
    boxes = torch.sort(torch.rand(10, 2, 2) * 1024, dim=1).values.flatten(1)
    with torch.inference_mode():
        low, iou = sam_b.decode(emb, points=(coords, labels), boxes=boxes, multimask_output=multimask,
                                cache=sam_b.decoder_cache(emb))
        best = iou.max(dim=1).values.sort().values
        threshold = float(best[len(best) // 2 - 1:len(best) // 2 + 1].mean())  # between two prompts' best
        kept, kept_iou, index = sam_b.decode_confident(emb, threshold, points=(coords, labels), boxes=boxes,
                                                       multimask_output=multimask, cache=sam_b.factored_cache(emb),
                                                       grid=grid)
    expected = (iou > threshold).nonzero()
    assert 0 < len(expected) < iou.numel()
    assert torch.equal(index, expected)
    torch.testing.assert_close(kept_iou, iou[expected[:, 0], expected[:, 1]], rtol=0, atol=1e-5)
    rows, cols = grid or (64, 64)
    want = low[expected[:, 0], expected[:, 1], :4 * rows, :4 * cols]
    assert kept.shape == want.shape
    torch.testing.assert_close(kept, want, rtol=0, atol=1e-5 * float(want.abs().max()))


def test_decode_confident_with_nothing_above_the_threshold(sam_b):
    emb = torch.randn(1, 256, 64, 64)
    with torch.inference_mode():
        kept, kept_iou, index = sam_b.decode_confident(emb, 1e9, points=(torch.rand(4, 1, 2) * 1024,
                                                                         torch.ones(4, 1, dtype=torch.long)))
    assert kept.shape == (0, 256, 256) and kept_iou.shape == (0,) and index.shape == (0, 2)


@pytest.mark.parametrize("rows,cols", [(64, 64), (43, 64), (64, 43), (30, 50), (0, 64), (1, 1)])
def test_decoded_masks_region_and_completion_equal_the_whole_grid(decoder, rows, cols):
    """DecodedMasks: a leading block of the token grid upscaled alone, then the rest filled in, equals
    upscaling the whole grid; the hypernetwork of some outputs is those outputs of all."""
    torch.manual_seed(4)
    embedding, pe = torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64)
    sparse, dense = torch.randn(1, 3, 256), torch.randn(1, 256, 64, 64)
    with torch.no_grad():
        whole, iou = decoder.predict_masks(embedding, pe, sparse, dense)
        decoded = decoder.decode_masks(embedding, pe, sparse, dense, outputs=slice(1, None))
        region = decoded.region(rows, cols)
        low = decoded.fill(torch.full((1, 3, 256, 256), float("nan")), slice(0, rows), slice(0, cols))
        part = low.clone()
        decoded.complete(low, rows, cols)
    torch.testing.assert_close(decoded.iou, iou)
    torch.testing.assert_close(low, whole[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(region, whole[:, 1:, :4 * rows, :4 * cols], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part[..., :4 * rows, :4 * cols], region, rtol=0, atol=0)
    assert torch.isnan(part).sum() == 3 * (256 * 256 - 16 * rows * cols)
