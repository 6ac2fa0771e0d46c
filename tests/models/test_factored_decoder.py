"""samkit.models.factored_decoder: the click as low-rank updates of per-image products is the decoder."""
from __future__ import annotations

import pytest
import torch

from samkit.export.onnx import DecoderGraph
from samkit.models.factored_decoder import FIRST_BLOCK, FactoredDecoder
from samkit.models.mask_decoder import token_masks_to_patches
from samkit.models.registry import resolve_name


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = resolve_name("sam_vit_b").builder().eval()
    with torch.no_grad():  # random, non-trivial norms and biases (LayerNorm weights are ones at init)
        for p in m.mask_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


PROMPTS = {
    "one point": ([[300.0, 400.0]], [1.0]),
    "points and a box": ([[100.0, 120.0], [700.0, 300.0], [80.0, 90.0], [900.0, 800.0]], [1.0, 0.0, 2.0, 3.0]),
    "many points": ([[40.0 * i, 1000.0 - 37.0 * i] for i in range(12)], [float(i % 2) for i in range(12)]),
}


@pytest.mark.parametrize("prompt", list(PROMPTS))
@pytest.mark.parametrize("mask", [False, True])
def test_click_equals_the_decoder(model, prompt, mask):
    """Scores and low-res logits of all 4 outputs equal MaskDecoder's (float rounding), for the whole grid
    and for a block of it; rest() gives the other tokens' logits."""
    torch.manual_seed(1)
    g = model.prompt_encoder.image_embedding_size[0]
    graph = DecoderGraph(model)
    embedding = torch.randn(1, 256, g, g)
    mask_input = 8.0 * torch.randn(1, 1, 4 * g, 4 * g) if mask else torch.zeros(1, 1, 4, 4)
    has_mask = torch.tensor([1.0 if mask else 0.0])
    coords, labels = (torch.tensor([x]) for x in PROMPTS[prompt])
    with torch.no_grad():
        want_low, want_iou = graph.decode(embedding, coords, labels, mask_input, has_mask)
        factored = FactoredDecoder(model.mask_decoder, model.dense_pe())
        keys = (embedding + graph._dense(mask_input, has_mask)).flatten(2)[0].t()
        image = factored.precompute(keys)
        assert list(image) == factored.image_names() and factored.image_names()[:3] == list(FIRST_BLOCK)
        sparse = graph._embed_points(coords, labels)
        iou, low, row_scale, factors, ct1_factor, weights = factored.click(image, sparse, torch.tensor([g, g]))
        _, block, *_ = factored.click(image, sparse, torch.tensor([g - 21, g - 3]))
        index = torch.tensor([0, g + 5, g * g - 1])
        rest = token_masks_to_patches(factored.rest(image["ct1"], row_scale, factors, ct1_factor, weights, index))
    scale = want_low.abs().max()
    torch.testing.assert_close(iou, want_iou, rtol=0, atol=1e-5)
    torch.testing.assert_close(low, want_low, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(block, want_low[:, :, :4 * (g - 21), :4 * (g - 3)], rtol=0, atol=1e-5 * scale)
    for k, t in enumerate(index.tolist()):
        i, j = divmod(t, g)
        torch.testing.assert_close(rest[:, :, k], want_low[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4], rtol=0,
                                   atol=1e-5 * scale)
    # the rank of the per-click part: 1 + heads * tokens per block
    tokens = 1 + model.mask_decoder.num_mask_tokens + coords.shape[1]
    assert factors.shape == (2 * (1 + 8 * tokens), g * g)
