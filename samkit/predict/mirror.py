"""Left-right mirroring between an image's input frame and its mirror image's (test-time mirror ensemble).

The mirror image is resized and padded like the image (content at the frame's left, ``width`` pixels wide), so a
point at frame position x + 0.5 (SAM's prompt encoder adds 0.5) mirrors to width - (x + 0.5): coordinate
width - 1 - x. Low-res logits (4 frame pixels each) mirror within the content's ``width / 4`` columns, linearly
interpolated where that is not a whole number.
"""
from __future__ import annotations

import functools

import torch


def mirror_points(coords: torch.Tensor, width: int) -> torch.Tensor:
    """(..., N, 2) x, y in the input frame -> the same points in the mirror image's frame."""
    out = coords.clone()
    out[..., 0] = width - 1 - coords[..., 0]
    return out


def mirror_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """(B, 4) x0, y0, x1, y1 in the input frame -> the same boxes in the mirror image's frame (x0 <= x1 kept)."""
    out = boxes.clone()
    out[:, 0], out[:, 2] = width - 1 - boxes[:, 2], width - 1 - boxes[:, 0]
    return out


@functools.lru_cache(maxsize=16)
def mirror_matrix(columns: int, width: float) -> torch.Tensor:
    """(columns, columns) M with ``x @ M`` the left-right mirror of (..., columns) low-res logits whose content is
    ``width`` columns wide (from column 0): column u takes the mirror position width - 1 - u, clamped to the
    grid, linearly interpolated. Its own inverse where ``width`` is a whole number."""
    src = (width - 1 - torch.arange(columns, dtype=torch.float64)).clamp(0, columns - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=columns - 1)
    frac = src - lo
    m = torch.zeros(columns, columns, dtype=torch.float64)
    u = torch.arange(columns)
    m.index_put_((lo, u), 1 - frac, accumulate=True)
    m.index_put_((hi, u), frac, accumulate=True)
    return m.float()


def mirror_low_res(logits: torch.Tensor, width: float) -> torch.Tensor:
    """(..., rows, columns) low-res logits, content ``width`` columns wide -> their left-right mirror."""
    return logits @ mirror_matrix(logits.shape[-1], float(width)).to(logits.device, logits.dtype)
