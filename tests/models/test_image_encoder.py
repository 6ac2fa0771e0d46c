"""SAM's ViT attention with decomposed relative positions: the banded, buffer-reusing bias gives the
attention the definition gives, whatever the band size, with and without gradients."""
from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

from samkit.models.image_encoder import Attention, decomposed_rel_pos, relative_positions


def attention_by_definition(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + rel_h[q row, k row] + rel_w[q col, k col]) v, the whole bias at once."""
    b, h, w, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    q, k, v = attn.qkv(x).reshape(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
    rh, rw = relative_positions(h, h, attn.rel_pos_h), relative_positions(w, w, attn.rel_pos_w)
    qg = q.reshape(b, heads, h, w, d)
    bias_h = torch.einsum("bnhwd,hkd->bnhwk", qg, rh)[..., :, None]  # (b, n, h, w, kh, 1)
    bias_w = torch.einsum("bnhwd,wkd->bnhwk", qg, rw)[..., None, :]  # (b, n, h, w, 1, kw)
    bias = (bias_h + bias_w).reshape(b, heads, h * w, h * w)
    weights = torch.softmax(q @ k.transpose(-1, -2) / d**0.5 + bias, dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, h, w, c))


@pytest.mark.parametrize("mask_bytes", [1, 3 * 2**14, 32 * 2**20])  # one row per band, uneven bands, all at once
def test_banded_bias_matches_the_definition(mask_bytes: int) -> None:
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, input_size=(7, 7)).eval()
    torch.nn.init.normal_(attn.rel_pos_h, std=0.5)
    torch.nn.init.normal_(attn.rel_pos_w, std=0.5)
    attn.mask_bytes = mask_bytes
    x = torch.randn(2, 7, 7, 32)
    with torch.inference_mode():
        want = attention_by_definition(attn, x)
        got = attn(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_banded_bias_keeps_gradients() -> None:
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, input_size=(7, 7))
    torch.nn.init.normal_(attn.rel_pos_h, std=0.5)
    attn.mask_bytes = 2**14  # bands of 2, 2, 2, 1 rows
    x = torch.randn(1, 7, 7, 32, requires_grad=True)
    attn(x).square().sum().backward()
    got = attn.rel_pos_h.grad.clone()
    attn.rel_pos_h.grad = None
    attention_by_definition(attn, x).square().sum().backward()
    torch.testing.assert_close(got, attn.rel_pos_h.grad, rtol=1e-4, atol=1e-5)


def test_attention_exports_to_onnx_and_agrees(tmp_path) -> None:  # noqa: ANN001 (pytest's tmp_path)
    """Under export the banded bias and the linear layers take their traceable forms."""
    torch.manual_seed(0)
    attn = Attention(64, num_heads=4, input_size=(16, 16)).eval()
    torch.nn.init.normal_(attn.rel_pos_h, std=0.5)
    torch.nn.init.normal_(attn.rel_pos_w, std=0.5)
    attn.mask_bytes = 2**16  # several bands
    x = torch.randn(1, 16, 16, 64)
    path = tmp_path / "attention.onnx"
    with torch.no_grad():
        torch.onnx.export(attn, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
        want = attn(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert abs(got - want).max() < 1e-4
    # the relative-position terms export as matrix products: onnxruntime's Einsum of these shapes is ~7x slower
    assert "Einsum" not in {node.op_type for node in onnx.load(str(path)).graph.node}


def test_decomposed_rel_pos_is_the_einsum() -> None:
    torch.manual_seed(0)
    rq, rh, rw = torch.randn(2, 3, 5, 7, 4), torch.randn(5, 5, 4), torch.randn(7, 7, 4)  # h != w
    rows, cols = decomposed_rel_pos(rq, rh, rw)
    torch.testing.assert_close(rows, torch.einsum("bnhwd,hkd->bnhwk", rq, rh))
    torch.testing.assert_close(cols, torch.einsum("bnhwd,wkd->bnhwk", rq, rw))
