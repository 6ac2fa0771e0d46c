"""The unit every dataset reader yields and every evaluation consumes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One image with its instance masks.

    image (H,W,3) uint8 RGB; masks (N,H,W) bool, one per object/region (class-agnostic unless
    ``categories`` is given); ignore (H,W) bool or None: pixels that count neither as object nor
    background (e.g. GrabCut's 128 band); name: a stable id (file stem); source: the image path.
    """

    name: str
    image: np.ndarray
    masks: np.ndarray
    ignore: np.ndarray | None = None
    source: str = ""
    categories: list[int] | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        h, w = self.image.shape[:2]
        if self.masks.ndim != 3 or self.masks.shape[1:] != (h, w) or self.masks.dtype != bool:
            raise ValueError(f"{self.name}: masks must be (N,{h},{w}) bool, got {self.masks.shape} {self.masks.dtype}")
        if self.ignore is not None and (self.ignore.shape != (h, w) or self.ignore.dtype != bool):
            raise ValueError(f"{self.name}: ignore must be ({h},{w}) bool")
