"""Referring-expression segmentation (RefCOCO / RefCOCO+ / RefCOCOg protocol): one mask per expression.

Metrics over expressions i with intersection I_i and union U_i of the predicted and target masks:

* cIoU (overall IoU): sum_i I_i / sum_i U_i (1.0 when every union is empty);
* gIoU (mean IoU): mean_i IoU_i, where an empty union (no-target expression, empty prediction) counts as 1;
* precision@t for t in 0.5 .. 0.9: the fraction of expressions with IoU_i >= t (LAVT / CRIS convention).

Each is reported overall and per group (``dataset(split_by)/split``, :func:`samkit.data.refer.group_key`).

:func:`evaluate` takes a *segmenter*: any callable ``segment(image, text) -> (H, W) bool mask``. When it
also has a ``set_image(image)`` method, that is called once per image before its expressions (whenever the image
differs from the previous sample's; the expressions of one image are consecutive in
:class:`~samkit.data.refer.RefDataset`), so the image embedding can
be reused; the callable still receives the image. A predictor (``set_image`` + ``predict(text=...)``, not
callable) is wrapped in :class:`PredictorSegmenter`.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from samkit.data.refer import group_key
from samkit.data.sample import Sample
from samkit.errors import SamkitError
from samkit.eval.metrics import threshold_key
from samkit.eval.report import track

PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


class PredictorSegmenter:
    """A text-promptable predictor as a segmenter: ``set_image`` once per image, then
    ``predict(text=..., multimask=False)`` per expression, keeping its best (or only) mask."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def __call__(self, image: np.ndarray, text: str) -> np.ndarray:
        pred = self.predictor.predict(text=text, multimask=False)
        masks = np.asarray(pred.masks, dtype=bool)
        if masks.ndim == 2:
            return masks
        return masks[int(np.argmax(pred.scores))] if masks.shape[0] > 1 else masks[0]


def as_segmenter(segmenter: Any) -> Callable[[np.ndarray, str], np.ndarray]:
    """A callable segmenter as is; a predictor (``predict`` and ``set_image``, not callable) wrapped in
    :class:`PredictorSegmenter`."""
    if callable(segmenter):
        return segmenter
    if hasattr(segmenter, "predict") and hasattr(segmenter, "set_image"):
        return PredictorSegmenter(segmenter)
    raise TypeError(f"a segmenter must be callable (image, text) -> mask, or a predictor; got "
                    f"{type(segmenter).__name__}")


# ------------------------------------------------------------------------------------------ metrics


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts (|pred & gt|, |pred | gt|) of two (H, W) masks (non-zero = object)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"predicted mask {pred.shape} and target {gt.shape} differ in size")
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def refer_metrics(intersections: Sequence[int], unions: Sequence[int],
                  thresholds: Sequence[float] = PRECISION_THRESHOLDS) -> dict:
    """cIoU, gIoU and precision@t of expressions with the given pixel counts, as a JSON-ready dict:
    ``{"num_expressions", "ciou", "giou", "precision": {"50": ..., ...}}`` (None values when empty)."""
    inter = np.asarray(intersections, dtype=np.float64)
    union = np.asarray(unions, dtype=np.float64)
    if inter.shape != union.shape or inter.ndim != 1:
        raise ValueError(f"need two 1-D count arrays of one length, got {inter.shape} and {union.shape}")
    if np.any(inter > union) or np.any(inter < 0):
        raise ValueError("need 0 <= intersection <= union for every expression")
    if inter.size == 0:
        return {"num_expressions": 0, "ciou": None, "giou": None,
                "precision": {threshold_key(t): None for t in thresholds}}
    ious = per_expression_iou(inter, union)
    return {
        "num_expressions": int(inter.size),
        "ciou": float(inter.sum() / union.sum()) if union.sum() > 0 else 1.0,
        "giou": float(ious.mean()),
        "precision": {threshold_key(t): float(np.mean(ious >= t)) for t in thresholds},
    }


def per_expression_iou(intersections: Sequence[int] | np.ndarray, unions: Sequence[int] | np.ndarray) -> np.ndarray:
    """IoU_i = I_i / U_i, 1.0 where U_i is 0 (both masks empty)."""
    inter, union = np.asarray(intersections, dtype=np.float64), np.asarray(unions, dtype=np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def summarize(expressions: Sequence[dict], thresholds: Sequence[float] = PRECISION_THRESHOLDS) -> dict:
    """:func:`refer_metrics` over all ``expressions`` (dicts with ``intersection``, ``union`` and ``group``)
    plus ``by_group``: the same per group, groups in order of first appearance."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for e in expressions:
        groups[e.get("group", "all")].append(e)

    def metrics(items: Sequence[dict]) -> dict:
        return refer_metrics([e["intersection"] for e in items], [e["union"] for e in items], thresholds)

    return {**metrics(expressions), "by_group": {g: metrics(items) for g, items in groups.items()}}


# ---------------------------------------------------------------------------------------- evaluation


def evaluate(segmenter: Any, samples: Iterable[Sample], max_samples: int | None = None, progress: bool | str = False,
             thresholds: Sequence[float] = PRECISION_THRESHOLDS) -> dict:
    """Referring segmentation metrics of ``segmenter`` on ``samples`` (e.g. a RefDataset: samples with
    ``sentence`` and ``masks`` (1, H, W)); ``max_samples`` limits the number of expressions.

    Returns a JSON-ready dict: ``protocol``, counts, ``ciou``, ``giou``, ``precision`` {"50": ..},
    ``by_group`` (the same per dataset/split), seconds per image encoding and per expression, and per
    expression its name, group, sentence, IoU, intersection / union / predicted / target pixel counts.
    """
    segment = as_segmenter(segmenter)
    set_image = getattr(segment, "set_image", None)
    expressions: list[dict] = []
    image_seconds, text_seconds = [], []
    current: np.ndarray | None = None
    for sample in track(samples, max_samples, progress, "refer"):
        text, gt = _sentence(sample), sample.masks[0]
        if current is None or current.shape != sample.image.shape or not np.array_equal(current, sample.image):
            current = sample.image
            if set_image is not None:
                t0 = time.perf_counter()
                set_image(sample.image)
                image_seconds.append(time.perf_counter() - t0)
            else:
                image_seconds.append(0.0)
        t0 = time.perf_counter()
        pred = np.asarray(segment(sample.image, text))
        text_seconds.append(time.perf_counter() - t0)
        if pred.shape != gt.shape:
            raise SamkitError(f"{sample.name}: the segmenter returned a mask of shape {pred.shape}, "
                              f"the image is {gt.shape}")
        inter, union = intersection_union(pred, gt)
        expressions.append({
            "name": sample.name, "group": group_key(sample.extra), "sentence": text,
            "iou": float(per_expression_iou([inter], [union])[0]), "intersection": inter, "union": union,
            "pred_area": int(np.count_nonzero(pred)), "gt_area": int(np.count_nonzero(gt)),
        })
    return {
        "protocol": "refer",
        "num_images": len(image_seconds),
        **summarize(expressions, thresholds),
        "seconds_per_image": float(np.mean(image_seconds)) if image_seconds else None,
        "seconds_per_expression": float(np.mean(text_seconds)) if text_seconds else None,
        "expressions": expressions,
    }


def _sentence(sample: Sample) -> str:
    text = getattr(sample, "sentence", None) or sample.extra.get("sentence")
    if not isinstance(text, str) or not text:
        raise SamkitError(f"{sample.name}: sample has no referring expression ('sentence')")
    if sample.masks.shape[0] != 1:
        raise SamkitError(f"{sample.name}: a referring sample needs exactly one target mask, "
                          f"got {sample.masks.shape[0]}")
    return text
