"""What the evaluation protocols need from a model: :class:`Segmenter` (``set_image`` + ``predict``)
and, for the protocols that prompt many objects at once, :class:`BatchSegmenter` (+ ``predict_batch``).

:class:`samkit.Predictor` is both; a classical baseline (e.g. :class:`samkit.predict.grabcut.GrabCutPredictor`)
only needs ``set_image`` and ``predict``. Structural types: nothing has to inherit from them.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


class Segmentation(Protocol):
    """A prediction: masks (C,H,W) bool, logits (C,H,W) float32, scores (C,) predicted IoU, low_res_logits
    (C,s,s) to feed back as ``mask_input`` (batched: a leading B axis on each)."""

    masks: np.ndarray
    logits: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


@runtime_checkable
class Segmenter(Protocol):
    """Prompted segmentation of one image at a time, prompts in original-image pixels (x, y)."""

    def set_image(self, image: np.ndarray) -> Any:
        """Take an (H,W,3) uint8 RGB image; later prompts refer to it."""
        ...

    def predict(self, points: Any = None, labels: Any = None, box: Any = None, mask_input: Any = None,
                multimask: bool = True) -> Segmentation:
        """points (N,2) with labels (N,) 1 / 0, box (4,) x0,y0,x1,y1, mask_input (1,s,s) earlier logits."""
        ...


@runtime_checkable
class BatchSegmenter(Segmenter, Protocol):
    """A :class:`Segmenter` that also answers B prompt sets in one call."""

    def predict_batch(self, points: Any = None, labels: Any = None, boxes: Any = None, mask_input: Any = None,
                      multimask: bool = False) -> Segmentation:
        """points (B,N,2) with labels (B,N), or boxes (B,4); every output field gets a leading B axis."""
        ...
