"""Running a model at another input size than the 1024 it was designed for.

SAM's prompt encoder stores the input frame (1024) and the embedding grid (64) as plain attributes
and its weights do not depend on them; TinyViT is size-agnostic; SAM's ViT has a 64x64 absolute
position embedding, interpolated here to the grid in use. So a model trained at 256 or 512 has
exactly the registry's state-dict keys and shapes.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from samkit.models.image_encoder import ImageEncoderViT
from samkit.models.sam import Sam

PATCH = 16  # input pixels per embedding cell, for every registered encoder


def set_input_size(model: Sam, img_size: int) -> None:
    """Make ``model`` take (B,3,img_size,img_size) inputs: prompt frame, embedding grid,
    mask-input size (4x the grid) and, for ViT encoders, an interpolated position embedding."""
    if img_size % PATCH or img_size < 4 * PATCH:
        raise ValueError(f"img_size must be a multiple of {PATCH} and at least {4 * PATCH}, got {img_size}")
    grid = img_size // PATCH
    pe = model.prompt_encoder
    pe.input_image_size = (img_size, img_size)
    pe.image_embedding_size = (grid, grid)
    pe.mask_input_size = (4 * grid, 4 * grid)
    model.img_size = img_size
    model.__dict__.pop("_pe_key", None)  # Sam.dense_pe caches the grid's encoding: recompute it
    encoder = model.image_encoder
    if isinstance(encoder, ImageEncoderViT) and encoder.img_size != img_size:
        encoder.forward = types.MethodType(_vit_forward_resized, encoder)


def _vit_forward_resized(self: ImageEncoderViT, x: torch.Tensor) -> torch.Tensor:
    """ImageEncoderViT.forward with the position embedding resized (bicubic) to the patch grid."""
    x = self.patch_embed(x)
    pos = self.pos_embed
    if pos.shape[1:3] != x.shape[1:3]:
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic",
                            align_corners=False).permute(0, 2, 3, 1)
    x = x + pos
    for block in self.blocks:
        x = block(x)
    return self.neck(x.permute(0, 3, 1, 2))
