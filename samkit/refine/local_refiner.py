"""Local Fusion Refiner: a small early-fusion CNN over one full-resolution crop (image, click disks,
current logits), resized to ``crop_size`` square. Where it looks: :mod:`samkit.refine.crops`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samkit.refine.config import RefinerConfig
from samkit.refine.layers import RefineHead, ResBlock, channels_last, conv


class LocalRefiner(nn.Module):
    """(B,3,S,S) normalised image crop + (B,3,S,S) prompt maps (positive / negative disks, squashed logits)
    -> the refiner's logits (B,1,S,S) and error logits (B,1,S,S); S = ``crop_size``."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        c = cfg.local_channels
        self.fine = conv(6, c)
        self.down = conv(c, c, stride=2)
        self.trunk = nn.Sequential(*[ResBlock(c) for _ in range(cfg.local_blocks)])
        self.head = RefineHead(c)

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine = self.fine(channels_last(torch.cat([image, prompt_maps], dim=1)))
        x = self.trunk(self.down(fine))
        x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(x + fine)
