"""Small convolution blocks shared by the global and local refiners."""
from __future__ import annotations

from typing import cast

import torch
from torch import nn

LOGIT_SCALE = 8.0  # SAM logits enter the refiners as tanh(logit / LOGIT_SCALE), in (-1, 1), and the refiners'
# own logits leave them multiplied by it: a confident answer is 10-20 logits, which a head of small weights
# (Adam moves each by about lr per step) would otherwise need thousands of steps to reach


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) stored channels-last (same values): the refiners' layout. Their convolutions have 3-32
    channels, for which oneDNN's kernels on channels-first tensors are slow on a CPU (a 1x1 convolution of 3
    channels at 256x192: 0.4 ms per mask, 17 ms for a batch of 3; channels-last: 0.06 ms)."""
    return x.contiguous(memory_format=torch.channels_last)


def pointwise(layer: nn.Conv2d, x: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution of a channels-first (B,C,H,W) tensor as matrix products, (out,in) @ (in,H*W) per
    image: 16 channels over a 144x192 work frame, 0.15 ms instead of the convolution's 0.23 ms on this CPU, and
    the layer with 2 outputs 0.08 ms (a channels-last convolution: 0.12 ms). Channels-last tensors go through
    ``layer``.
    ``add_to`` (B,out,H,W), channels-first: the result is added into it in place (one pass over the frame
    fewer) and it is returned. One image is one ``addmm``: ``torch.matmul`` of a weight that requires grad
    and a batch does not fold the batch into one product and is 4x slower."""
    if not x.is_contiguous():
        return layer(x) if add_to is None else add_to.add_(layer(x))
    b, c, h, w = x.shape
    weight = layer.weight.view(layer.out_channels, c)
    bias = layer.bias if layer.bias is not None else weight.new_zeros(layer.out_channels)
    if b == 1 and add_to is None:
        return torch.addmm(bias[:, None], weight, x.view(c, h * w)).view(1, -1, h, w)
    if b == 1 and add_to is not None and add_to.is_contiguous():
        add_to.view(-1, h * w).addmm_(weight, x.view(c, h * w)).add_(bias[:, None])
        return add_to
    y = (torch.matmul(weight, x.view(b, c, h * w)) + bias[:, None]).view(b, -1, h, w)
    return y if add_to is None else add_to.add_(y)


def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution + ReLU: (B,c_in,H,W) -> (B,c_out,H/stride,W/stride)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip: (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class RefineHead(nn.Module):
    """(B,C,H,W) features -> the refiner's own logits (B,1,H,W), in units of ``LOGIT_SCALE``, and error
    logits (B,1,H,W): a hidden 1x1 layer (C -> C, ReLU) and the output layer (C -> 2), or the output layer
    alone (``hidden`` False: one pass over the frame fewer).

    The logits start at exactly 0 (zero weights and bias) and the error output at 0 (sigmoid 0.5), so an
    untrained refiner's :func:`blend` only shrinks SAM's logits (keeps its mask), and both outputs learn at full
    speed from the first step. (A closed gate, bias -4, stayed closed for a whole 600-step run: Adam moves a
    bias by about lr per step.)
    """

    def __init__(self, channels: int, hidden: bool = True) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True)) if hidden else None
        self.out = nn.Conv2d(channels, 2, 1)
        assert self.out.bias is not None  # Conv2d(bias=True)
        with torch.no_grad():
            self.out.weight[0].zero_()
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hidden is not None:  # (1x1 convolution, ReLU): the ReLU in place on the product's fresh output
            x = pointwise(cast(nn.Conv2d, self.hidden[0]), x).relu_()
        y = pointwise(self.out, x)
        return LOGIT_SCALE * y[:, :1], y[:, 1:]


def squash_logits(logits: torch.Tensor) -> torch.Tensor:
    """SAM logits (any shape) -> the refiners' input scale, tanh(logits / LOGIT_SCALE)."""
    return torch.tanh(logits / LOGIT_SCALE)


def blend(base: torch.Tensor, logits: torch.Tensor, error_logits: torch.Tensor) -> torch.Tensor:
    """The error map's blend of a refiner's logits with the base logits (same shapes):
    base + sigmoid(err) * (logits - base): where the error map is high the refiner's answer replaces the base."""
    return torch.lerp(base, logits, torch.sigmoid(error_logits))
