"""Global Fusion Refiner: early fusion of image, clicks, SAM's embedding and SAM's logits over the whole
image at the refiner's reduced resolution (the work frame, longer side ``work_size``).

It is split at the point where the prompt enters, so that the image-only part runs once per image:
:class:`ImageBranch` (image + SAM embedding -> features, cached by the caller) and :class:`PromptFusion`
(those features + click maps + SAM logits -> logits and error map, per click).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from samkit.predict.transforms import resize_bilinear
from samkit.refine.config import RefinerConfig
from samkit.refine.layers import RefineHead, ResBlock, blend, channels_last, conv, pointwise


@dataclass
class ImageFeatures:
    """Image-only features of a batch of images in the work frame (h, w): ``coarse`` (B,C,h/s,w/s) (s the
    trunk stride) with the SAM embedding fused in, ``fine`` (B,F,h,w) for the full work-frame head."""

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


def feature_layout(cfg: RefinerConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """How the global stage's features are stored: channels-last with ``fine_mix`` (3x3 layers at the work
    frame), channels-first without (1x1 layers there as matrix products; the trunk's 3x3 layers on a 24x18
    grid 0.03 ms faster per click so)."""
    return channels_last if cfg.fine_mix else torch.Tensor.contiguous


class ImageBranch(nn.Module):
    """Image-only work: (B,3,h,w) normalised image + (B,E,g,g) SAM embedding -> :class:`ImageFeatures`
    (channels-last with a 3x3 ``fine_mix``; without it channels-first: per-pixel layers at the work frame, and
    the trunk's small grid, run faster so on this CPU)."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        c, f = cfg.channels, cfg.fine_channels
        self.fine = nn.Sequential(conv(3, f), conv(f, f))
        halvings = [conv(c, c, stride=2) for _ in range(cfg.trunk_stride.bit_length() - 2)]
        self.down = nn.Sequential(conv(f, c, stride=2), *halvings, conv(c, c))
        self.layout = feature_layout(cfg)
        self.embed = nn.Sequential(nn.Conv2d(cfg.embed_dim, cfg.embed_channels, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(cfg.embed_channels, c, 1))

    def forward(self, image: torch.Tensor, embedding: torch.Tensor,
                valid: tuple[float, float] = (1.0, 1.0)) -> ImageFeatures:
        fine = self.fine(channels_last(image))
        coarse = self.down(fine)
        coarse = coarse + embedding_to_frame(self.embed(embedding.to(coarse.dtype)), valid, coarse.shape[-2:])
        return ImageFeatures(self.layout(coarse), self.layout(fine))


class PromptFusion(nn.Module):
    """Per-click work: cached :class:`ImageFeatures` + prompt maps (B,3,h,w) (positive / negative click disks,
    squashed SAM logits) -> the refiner's logits (B,1,h,w) and error logits (B,1,h,w) in the work frame.

    The prompt maps are pooled to the trunk's frame (max-pooled disks, so no click vanishes), fused
    with the coarse image features by residual blocks, brought back to the work frame and combined with
    the fine image features and the maps themselves by 1x1 convolutions (and ``fine_mix``'s 3x3)."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        c, f = cfg.channels, cfg.fine_channels
        self.prompt = nn.Conv2d(3, c, 3, 1, 1)
        self.trunk = nn.Sequential(*[ResBlock(c) for _ in range(cfg.blocks)])
        self.lift = nn.Conv2d(c, f, 1)
        self.fine_prompt = nn.Conv2d(3, f, 1)
        # 3x3: aligns the fused answer with the image's edges at the work frame (channels-last); without it
        # every work-frame layer is per pixel and runs channels-first (pointwise)
        self.mix = conv(f, f) if cfg.fine_mix else None
        self.layout = feature_layout(cfg)
        self.head = RefineHead(f, hidden=cfg.head_hidden)

    def forward(self, feats: ImageFeatures, prompt_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = (int(feats.coarse.shape[-2]), int(feats.coarse.shape[-1]))
        if self.mix is not None:
            prompt_maps = channels_last(prompt_maps)
        pooled = self.layout(torch.cat([F.adaptive_max_pool2d(prompt_maps[:, :2], size),
                                        F.adaptive_avg_pool2d(prompt_maps[:, 2:], size)], dim=1))
        x = self.trunk(torch.relu(feats.coarse + self.prompt(pooled)))
        if self.mix is None:
            x = resize_bilinear(self.lift(x), (int(feats.fine.shape[-2]), int(feats.fine.shape[-1])))
            x = pointwise(self.fine_prompt, prompt_maps.contiguous(), add_to=x.add_(feats.fine))
            return self.head(x.relu_())
        x = F.interpolate(self.lift(x), size=feats.fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.mix(torch.relu(x + feats.fine + self.fine_prompt(prompt_maps))))


def blend_up(base: torch.Tensor, logits: torch.Tensor, error_logits: torch.Tensor) -> torch.Tensor:
    """The global stage's answer at full resolution: its logits and error logits (B,1,h,w) upsampled
    (bilinear) to SAM's logits ``base`` (B,1,H,W) and :func:`~samkit.refine.layers.blend`-ed with them."""
    size = (int(base.shape[-2]), int(base.shape[-1]))
    up = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (logits, error_logits)]
    return blend(base, *up)


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
