"""The hook through which :class:`~samkit.predict.predictor.Predictor` runs a mask refiner (e.g. SAM-REF,
:mod:`samkit.refine`) without importing it: any object with these methods will do."""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from samkit.models.evf_sam import EvfSam
from samkit.models.sam import Sam


class MaskRefiner(Protocol):
    """A refiner of the predictor's masks, with its own per-image cache: it takes the model's low-res logits
    and returns full-resolution ones (upsampling them itself, where its answer needs no second pass)."""

    def check_model(self, model: Sam | EvfSam) -> None:
        """Raise a SamkitError when the refiner was not made for ``model`` (embedding size, input frame)."""

    def set_image(self, image: np.ndarray, embedding: torch.Tensor) -> None:
        """Cache the image-only work: image (H,W,3) uint8 RGB, embedding (1,E,g,g) the model's for it."""

    def reset_image(self) -> None:
        """Forget the cached image (the predictor's image changed without the refiner seeing it)."""

    def refine(self, low_res: torch.Tensor, points: np.ndarray | None = None,
               labels: np.ndarray | None = None, threads: int | None = None) -> torch.Tensor:
        """The model's low-res logits (C,s,s) + the clicks (points (N,2) x,y pixels, labels (N,)) -> refined
        logits (C,H,W) float32 CPU at the image's resolution; ``threads``: the predictor's fixed thread count
        (None: adaptive). Raises a SamkitError without an image. Only the image's part of the low-res grid is
        read (what :func:`~samkit.predict.transforms.postprocess_logits` to a frame of the image reads): the
        predictor does not compute the padding's logits before :meth:`refine`."""
