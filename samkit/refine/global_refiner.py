"""Global Fusion Refiner: early fusion of image, clicks, SAM's embedding and SAM's logits over the whole
image at the refiner's reduced resolution (the work frame, longer side ``work_size``).

It is split at the point where the prompt enters, so that the image-only part runs once per image:
:class:`ImageBranch` (image + SAM embedding -> features, cached by the caller) and :class:`PromptFusion`
(those features + click maps + SAM logits -> correction and error map, per click).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from samkit.refine.config import RefinerConfig
from samkit.refine.layers import RefineHead, ResBlock, conv


@dataclass
class ImageFeatures:
    """Image-only features of a batch of images in the work frame (h, w): ``coarse`` (B,C,h/2,w/2) with
    the SAM embedding fused in, ``fine`` (B,C,h,w) for the full work-frame head."""

    coarse: torch.Tensor
    fine: torch.Tensor

    def expand(self, n: int) -> ImageFeatures:
        """The same features for n prompt sets of one image (B must be 1)."""
        return ImageFeatures(self.coarse.expand(n, -1, -1, -1), self.fine.expand(n, -1, -1, -1))


def embedding_to_frame(embedding: torch.Tensor, valid: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """SAM embedding-grid features (B,C,g,g) over the padded input frame -> (B,C,h,w) over the image only.

    ``valid`` (fh, fw): the fraction of the input frame the image covers (SAM pads bottom/right);
    ``size`` (h, w): the target frame. Bilinear."""
    h, w = size
    full = (max(round(h / valid[0]), h), max(round(w / valid[1]), w))
    return F.interpolate(embedding, size=full, mode="bilinear", align_corners=False)[..., :h, :w]


class ImageBranch(nn.Module):
    """Image-only work: (B,3,h,w) normalised image + (B,E,g,g) SAM embedding -> :class:`ImageFeatures`."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.fine = conv(3, c)
        self.down = nn.Sequential(conv(c, c, stride=2), conv(c, c))
        self.embed = nn.Sequential(nn.Conv2d(cfg.embed_dim, cfg.embed_channels, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(cfg.embed_channels, c, 1))

    def forward(self, image: torch.Tensor, embedding: torch.Tensor,
                valid: tuple[float, float] = (1.0, 1.0)) -> ImageFeatures:
        fine = self.fine(image)
        coarse = self.down(fine)
        coarse = coarse + embedding_to_frame(self.embed(embedding.to(coarse.dtype)), valid, coarse.shape[-2:])
        return ImageFeatures(coarse, fine)


class PromptFusion(nn.Module):
    """Per-click work: cached :class:`ImageFeatures` + prompt maps (B,3,h,w) (positive / negative click disks,
    squashed SAM logits) -> logit correction (B,1,h,w) and error logits (B,1,h,w) in the work frame."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.prompt = nn.Conv2d(3, c, 3, 2, 1)
        self.trunk = nn.Sequential(*[ResBlock(c) for _ in range(cfg.blocks)])
        self.fine_prompt = nn.Conv2d(3, c, 1)
        self.head = RefineHead(c)

    def forward(self, feats: ImageFeatures, prompt_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(torch.relu(feats.coarse + self.prompt(prompt_maps)))
        x = F.interpolate(x, size=feats.fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.relu(x + feats.fine + self.fine_prompt(prompt_maps)))


class GlobalRefiner(nn.Module):
    """:class:`ImageBranch` (once per image) followed by :class:`PromptFusion` (per click)."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.image_branch = ImageBranch(cfg)
        self.fusion = PromptFusion(cfg)

    def forward(self, image: torch.Tensor, embedding: torch.Tensor,
                prompt_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both stages at once (training): (B,3,h,w), (B,E,g,g), (B,3,h,w) -> (B,1,h,w) x 2."""
        return self.fusion(self.image_branch(image, embedding), prompt_maps)
