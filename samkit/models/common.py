"""Small building blocks shared by the SAM-family networks."""
from __future__ import annotations

import os
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

# Below this many multiply-adds a call's fixed cost in oneDNN (~12 us) outweighs its faster GEMM.
ONEDNN_MIN_MACS = 1 << 20


@cache
def onednn_linear_available() -> bool:
    """Whether :func:`linear` may use oneDNN: torch built with it, and ``SAMKIT_ONEDNN_LINEAR`` not ``0``."""
    if os.environ.get("SAMKIT_ONEDNN_LINEAR", "1") == "0" or not torch.backends.mkldnn.is_available():
        return False
    return hasattr(torch.ops.mkldnn, "_linear_pointwise")


def tracing() -> bool:
    """Whether the code runs under a tracer or compiler (ONNX export, TorchScript, torch.compile): the
    places that pick a kernel or write into a reused buffer then take the plain, traceable form."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` (``layer`` usually an ``nn.Linear``), (..., in) -> (..., out).

    At inference on the CPU in fp32, a plain ``nn.Linear`` call of at least :data:`ONEDNN_MIN_MACS` runs on
    oneDNN's GEMM (``torch.ops.mkldnn._linear_pointwise``, dense tensors in and out, the layer's own
    weights): torch's ``F.linear`` goes to MKL, which on AMD CPUs runs its AVX2 code (this 2-core AMD
    EPYC host: 175-200 GFLOP/s against oneDNN's 300-330 with AVX-512, and 1.1x faster with AVX2 only).
    Same function within float rounding; gradients, tracing/export, other dtypes or devices, quantised or
    hooked modules take the ordinary call. Used by SAM's ViT image encoder (sam_vit_b's encoder 6.9 -> 4.6 s
    here) and the mask decoder's token MLPs and upscaling chain (:func:`dense`; segment-everything's decoder
    on samkit_tiny 1.30-1.33 -> 1.10-1.15 s per image); TinyViT keeps ``F.linear``.
    """
    if type(layer) is not nn.Linear or layer._forward_hooks or layer._forward_pre_hooks:
        return layer(x)
    return dense(x, layer.weight, layer.bias)


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: (..., in), (out, in), (out,) -> (..., out), on oneDNN's GEMM where
    :func:`linear` would use it."""
    if (x.dim() < 2 or x.numel() * weight.shape[0] < ONEDNN_MIN_MACS or x.device.type != "cpu"
            or x.dtype != torch.float32 or weight.dtype != torch.float32 or not onednn_linear_available()
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)) or tracing()):
        return F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B,C,H,W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Linear -> activation -> Linear, keys ``lin1``/``lin2`` (SAM layout). (..., D) -> (..., D).

    ``onednn``: run both layers through :func:`linear` (the image encoders' large products).
    """

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU, onednn: bool = False) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()
        self.onednn = onednn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            return linear(self.lin2, self.act(linear(self.lin1, x)))
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them, keys ``layers.N`` (SAM decoder heads)."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=False))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x
