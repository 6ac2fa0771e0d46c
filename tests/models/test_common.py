"""samkit.models.common.linear: oneDNN's GEMM for large inference products, the ordinary call otherwise."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from samkit.models import common
from samkit.models.common import MLPBlock, linear


def kernels(fn) -> set[str]:  # noqa: ANN001 (a callable)
    """Names of the operators ``fn()`` ran."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@pytest.fixture
def layer() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(256, 512)


def test_large_inference_products_use_onednn(layer: nn.Linear) -> None:
    assert common.onednn_linear_available()  # the pinned torch wheel has oneDNN
    x = torch.randn(2, 64, 256)  # 2*64*256*512 multiply-adds >= ONEDNN_MIN_MACS
    with torch.inference_mode():
        assert "mkldnn::_linear_pointwise" in kernels(lambda: linear(layer, x))
        got = linear(layer, x)
        torch.testing.assert_close(got, nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    assert got.shape == (2, 64, 512)


def test_small_products_gradients_and_opt_out_take_the_ordinary_call(layer: nn.Linear,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with torch.inference_mode():
        assert "mkldnn::_linear_pointwise" not in kernels(lambda: linear(layer, torch.randn(3, 256)))
    x = torch.randn(64, 256, requires_grad=True)
    assert "mkldnn::_linear_pointwise" not in kernels(lambda: linear(layer, x))
    linear(layer, x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    monkeypatch.setenv("SAMKIT_ONEDNN_LINEAR", "0")
    common.onednn_linear_available.cache_clear()
    try:
        with torch.inference_mode():
            assert "mkldnn::_linear_pointwise" not in kernels(lambda: linear(layer, torch.randn(64, 256)))
    finally:
        monkeypatch.delenv("SAMKIT_ONEDNN_LINEAR")
        common.onednn_linear_available.cache_clear()


def test_mlp_block_is_the_same_function_either_way() -> None:
    torch.manual_seed(0)
    plain = MLPBlock(256, 1024)
    fast = MLPBlock(256, 1024, onednn=True)
    fast.load_state_dict(plain.state_dict(), strict=True)  # same keys
    x = torch.randn(4, 64, 256)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
