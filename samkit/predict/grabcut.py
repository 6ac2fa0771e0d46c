"""A classical baseline with the predictor's interface: OpenCV's GrabCut driven by clicks.

No learning at all: each ``predict`` runs ``cv2.grabCut`` (3 iterations, mask initialisation) on
the full-resolution image with

* every click as a sure disk (radius 5 px): foreground for positive, background for negative clicks;
* the previous mask (``mask_input``, as fed back by the interactive protocol) as probable foreground,
  or, without one, a probable-foreground disk of radius 10 % of the image diagonal at the first
  positive click;
* every other pixel probable background.

It answers one mask per prompt (``multimask`` is ignored) with score 1.0. Its ``low_res_logits`` are
the full-resolution mask as +-1 logits (1,H,W), so feeding one back as ``mask_input`` gives GrabCut
its previous mask. ``samkit eval interactive --model opencv_grabcut`` compares a model with it.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from samkit.data.image_io import load_image
from samkit.errors import PromptError
from samkit.predict.predictor import Prediction

BASELINE_NAME = "opencv_grabcut"
SURE_RADIUS = 5  # px: disk around each click fixed as sure foreground / background
PRIOR_FRACTION = 0.10  # first positive click's probable-foreground disk, fraction of the image diagonal
ITERATIONS = 3


class GrabCutPredictor:
    """Click-driven ``cv2.grabCut`` with :class:`~samkit.predict.predictor.Predictor`'s
    ``set_image`` / ``predict`` interface (points and box prompts; no text)."""

    name = BASELINE_NAME

    def __init__(self, iterations: int = ITERATIONS, sure_radius: int = SURE_RADIUS,
                 prior_fraction: float = PRIOR_FRACTION) -> None:
        self.iterations = iterations
        self.sure_radius = sure_radius
        self.prior_fraction = prior_fraction
        self.image: np.ndarray | None = None

    def set_image(self, image: np.ndarray | Image.Image | str | Path) -> None:
        """image: (H,W,3) uint8 RGB array, PIL image or path."""
        self.image = np.ascontiguousarray(load_image(image)[..., ::-1])  # OpenCV works in BGR

    def predict(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None,
                multimask: bool = False) -> Prediction:
        """points (N,2) x,y and labels (N,) in image pixels; box (4,) x0,y0,x1,y1; mask_input (1,H,W)
        logits of an earlier answer. Returns one mask: masks (1,H,W) bool, scores (1,)."""
        if self.image is None:
            raise PromptError("set_image() must be called before predict()")
        h, w = self.image.shape[:2]
        pts = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labs = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
        if len(labs) != len(pts):
            raise PromptError(f"{len(pts)} points but {len(labs)} labels")
        if not len(pts) and box is None:
            raise PromptError("GrabCut needs at least one point or a box")
        init = self._initial_mask(h, w, pts, labs, box, mask_input)
        mask = self._grabcut(self.image, init)
        logits = np.where(mask, 1.0, -1.0).astype(np.float32)[None]
        return Prediction(masks=mask[None], logits=logits, scores=np.ones(1, dtype=np.float32),
                          low_res_logits=logits.copy())

    def _initial_mask(self, h: int, w: int, pts: np.ndarray, labs: np.ndarray, box: np.ndarray | None,
                      mask_input: np.ndarray | None) -> np.ndarray:
        """(H,W) uint8 GrabCut labels (GC_BGD / GC_FGD / GC_PR_BGD / GC_PR_FGD)."""
        init = np.full((h, w), cv2.GC_PR_BGD, dtype=np.uint8)
        inside = None  # the box's pixels, as slices
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in np.asarray(box, dtype=np.float64).reshape(4))
            inside = (slice(max(y0, 0), y1 + 1), slice(max(x0, 0), x1 + 1))
            init[:] = cv2.GC_BGD
            init[inside] = cv2.GC_PR_BGD
        if mask_input is not None:
            given = np.asarray(mask_input)
            previous = given.reshape(-1, *given.shape[-2:])[0]
            if previous.shape != (h, w):
                raise PromptError(f"GrabCut's mask_input must be its own earlier (1,{h},{w}) answer, got {given.shape}")
            init[previous > 0] = cv2.GC_PR_FGD
        else:
            positive = pts[labs == 1]
            if len(positive):
                radius = max(int(round(self.prior_fraction * np.hypot(h, w))), 1)
                cv2.circle(init, _pixel(positive[0]), radius, int(cv2.GC_PR_FGD), -1)
            elif inside is not None:
                init[inside] = cv2.GC_PR_FGD
        for point, label in zip(pts, labs, strict=False):
            cv2.circle(init, _pixel(point), self.sure_radius, int(cv2.GC_FGD if label == 1 else cv2.GC_BGD), -1)
        return init

    def _grabcut(self, image: np.ndarray, init: np.ndarray) -> np.ndarray:
        """(H,W) bool foreground after ``iterations`` of GrabCut from ``init`` (deterministic)."""
        fg = (init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)
        if fg.all() or not fg.any():  # one class only: GrabCut cannot fit two colour models
            return fg
        mask = init.copy()
        cv2.setRNGSeed(0)  # GrabCut's k-means initialisation is random
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # rect None: unused with GC_INIT_WITH_MASK, but the OpenCV stubs only know Sequence[int]
        cv2.grabCut(image, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))
