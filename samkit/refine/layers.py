"""Small convolution blocks shared by the global and local refiners."""
from __future__ import annotations

import torch
from torch import nn

LOGIT_SCALE = 8.0  # SAM logits enter the refiners as tanh(logit / LOGIT_SCALE), in (-1, 1)


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
    """(B,C,H,W) features -> logit correction (B,1,H,W) and error logits (B,1,H,W).

    The error output starts strongly negative (bias -4): an untrained refiner leaves SAM's logits
    almost unchanged, and training starts from SAM's answer.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(channels, 2, 1)
        assert self.out.bias is not None  # Conv2d(bias=True)
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([0.0, -4.0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.out(self.hidden(x))
        return y[:, :1], y[:, 1:]


def squash_logits(logits: torch.Tensor) -> torch.Tensor:
    """SAM logits (any shape) -> the refiners' input scale, tanh(logits / LOGIT_SCALE)."""
    return torch.tanh(logits / LOGIT_SCALE)


def blend(base: torch.Tensor, delta: torch.Tensor, error_logits: torch.Tensor) -> torch.Tensor:
    """The error map's blend of a refiner's answer (base + delta) with the base logits: base + sigmoid(err) * delta."""
    return base + torch.sigmoid(error_logits) * delta
