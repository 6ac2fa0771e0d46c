"""Clicks as image-shaped inputs: one disk map for positive clicks, one for negative clicks."""
from __future__ import annotations

import torch


def click_maps(points: torch.Tensor | None, labels: torch.Tensor | None, size: tuple[int, int],
               radius: float, batch: int = 1) -> torch.Tensor:
    """Disk maps (B,2,h,w) float32: channel 0 is 1 within ``radius`` of a positive click, channel 1 of a
    negative one. points (B,N,2) x,y in the map's pixels (pixel centres at integers), labels (B,N) with
    1 positive, 0 negative, -1 padding; None gives ``batch`` empty maps."""
    h, w = size
    if points is None or labels is None or points.shape[1] == 0:
        return torch.zeros(batch, 2, h, w)
    points = points.float()
    ys = torch.arange(h, dtype=torch.float32, device=points.device)
    xs = torch.arange(w, dtype=torch.float32, device=points.device)
    dy2 = (ys[None, None, :] - points[..., 1:2]) ** 2  # (B,N,h)
    dx2 = (xs[None, None, :] - points[..., 0:1]) ** 2  # (B,N,w)
    inside = dy2[..., :, None] + dx2[..., None, :] <= radius ** 2  # (B,N,h,w)
    pos = (inside & (labels == 1)[..., None, None]).any(dim=1)
    neg = (inside & (labels == 0)[..., None, None]).any(dim=1)
    return torch.stack([pos, neg], dim=1).float()


def scale_points(points: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """(..., 2) x,y pixel positions of a (H,W) frame -> the same positions in a (h,w) frame resizing it."""
    sx = to_size[1] / from_size[1]
    sy = to_size[0] / from_size[0]
    return torch.stack([(points[..., 0] + 0.5) * sx - 0.5, (points[..., 1] + 0.5) * sy - 0.5], dim=-1)
