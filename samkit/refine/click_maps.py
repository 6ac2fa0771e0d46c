"""Clicks as image-shaped inputs: one disk map for positive clicks, one for negative clicks."""
from __future__ import annotations

import math

import torch


def click_maps(points: torch.Tensor | None, labels: torch.Tensor | None, size: tuple[int, int],
               radius: float, batch: int = 1) -> torch.Tensor:
    """Disk maps (B,2,h,w) float32: channel 0 is 1 within ``radius`` of a positive click, channel 1 of a
    negative one. points (B,N,2) x,y in the map's pixels (pixel centres at integers), labels (B,N) with
    1 positive, 0 negative, -1 padding; None gives ``batch`` empty maps. Each prompt set is drawn on a
    fresh :class:`DiskCanvas` (the one way disks are drawn)."""
    h, w = size
    if points is None or labels is None or points.shape[1] == 0:
        return torch.zeros(batch, 2, h, w)
    maps = [DiskCanvas(size, radius).draw(points[b:b + 1], labels[b:b + 1]) for b in range(points.shape[0])]
    return torch.cat(maps).to(points.device)


def scale_points(points: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """(..., 2) x,y pixel positions of a (H,W) frame -> the same positions in a (h,w) frame resizing it."""
    sx = to_size[1] / from_size[1]
    sy = to_size[0] / from_size[0]
    return torch.stack([(points[..., 0] + 0.5) * sx - 0.5, (points[..., 1] + 0.5) * sy - 0.5], dim=-1)


class DiskCanvas:
    """The click disks of one image's growing click list in one (h,w) frame, drawn incrementally: a click
    that extends the last list draws only its own disk (a few small tensors around it) instead of the whole
    list over the whole frame; a list that does not extend the last one is drawn from scratch (1,2,h,w).

    With ``floor`` > 0 it also keeps the bounds that hold clicked pixels on their side (:meth:`hold`),
    updated in the same boxes as the disks."""

    def __init__(self, size: tuple[int, int], radius: float, floor: float = 0.0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.radius = float(radius)
        self.floor = float(floor)
        self.points = torch.zeros(0, 2)
        self.labels = torch.zeros(0, dtype=torch.int64)
        self.maps = torch.zeros(1, 2, *self.size)
        # hold()'s lower and upper bound per pixel (1,2,h,w): -inf / +inf where no disk holds it; none without a floor
        self.bounds = torch.tensor([-math.inf, math.inf]).view(1, 2, 1, 1).repeat(1, 1, *self.size) if self.floor > 0 \
            else torch.empty(0)

    def draw(self, points: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
        """points (1,N,2) x,y in the frame's pixels, labels (1,N) (1 positive, 0 negative, others ignored)
        -> (1,2,h,w) float32 disk maps (the canvas's own tensor: do not modify it)."""
        if points is None or labels is None:
            points, labels = torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64)
        else:
            points, labels = points.reshape(-1, 2).float().cpu(), labels.reshape(-1).cpu()
        n = self.points.shape[0]
        if n > points.shape[0] or not (torch.equal(points[:n], self.points) and torch.equal(labels[:n], self.labels)):
            self.maps = torch.zeros(1, 2, *self.size)  # not an extension (undo, a new object): start again
            self._bound(0, self.size[0], 0, self.size[1])
            n = 0
        for (x, y), label in zip(points[n:], labels[n:].tolist(), strict=True):
            if label in (0, 1):
                self._disk(x, y, 1 - label)
        self.points, self.labels = points.clone(), labels.clone()
        return self.maps

    def hold(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B,1,h,w) of this frame, in place: held to >= +floor inside positive and <= -floor inside
        negative click disks, where the disks of the two kinds do not overlap (there the network decides: a
        click beside an earlier one of the other kind is a correction); ``floor`` 0 leaves them unchanged."""
        if self.floor <= 0:
            return logits
        return logits.clamp_(self.bounds[:, :1], self.bounds[:, 1:])

    def _disk(self, x: torch.Tensor, y: torch.Tensor, channel: int) -> None:
        """Set the pixels within ``radius`` of (x, y) (float32 scalars) in one channel: the float32 test
        dy^2 + dx^2 <= radius^2 over a box a pixel wider than the disk on every side."""
        (h, w), r = self.size, self.radius
        y0, y1 = max(0, math.floor(float(y) - r) - 1), min(h, math.ceil(float(y) + r) + 2)
        x0, x1 = max(0, math.floor(float(x) - r) - 1), min(w, math.ceil(float(x) + r) + 2)
        if y0 >= y1 or x0 >= x1:
            return
        dy2 = (torch.arange(y0, y1, dtype=torch.float32) - y) ** 2
        dx2 = (torch.arange(x0, x1, dtype=torch.float32) - x) ** 2
        self.maps[0, channel, y0:y1, x0:x1].masked_fill_(dy2[:, None] + dx2[None, :] <= r ** 2, 1.0)
        self._bound(y0, y1, x0, x1)

    def _bound(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Recompute :meth:`hold`'s bounds (lower, upper) in one box from the disks there."""
        if self.floor <= 0:
            return
        pos, neg = self.maps[0, 0, y0:y1, x0:x1] > 0, self.maps[0, 1, y0:y1, x0:x1] > 0
        self.bounds[0, 0, y0:y1, x0:x1] = torch.where(pos & ~neg, self.floor, -math.inf)
        self.bounds[0, 1, y0:y1, x0:x1] = torch.where(neg & ~pos, -self.floor, math.inf)
