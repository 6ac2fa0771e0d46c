"""Segmentation metrics: IoU with an ignore region, boundary IoU, NoC / NoF and mIoU@k from per-click IoU
arrays, and clicks left on the wrong side of a mask."""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float | np.ndarray:
    """IoU of bool masks pred (..., H, W) with gt (H, W); pixels where ``ignore`` (H, W) is True
    count neither as object nor background. Returns a float for a single (H, W) pred, else an
    array (...). An empty union (pred and gt both empty outside ``ignore``) gives 1.0."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape[-2:] != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in size")
    inter = pred & gt
    union = pred | gt
    if ignore is not None:
        valid = ~np.asarray(ignore, dtype=bool)
        inter &= valid
        union &= valid
    n_inter = np.count_nonzero(inter, axis=(-2, -1))
    n_union = np.count_nonzero(union, axis=(-2, -1))
    out = np.where(n_union > 0, n_inter / np.maximum(n_union, 1), 1.0)
    return float(out) if out.ndim == 0 else out


def boundary_region(mask: np.ndarray, width: int) -> np.ndarray:
    """The (H, W) bool pixels of ``mask`` within ``width`` pixels of its contour (the image border counts
    as outside): the mask minus its erosion by a 3x3 square ``width`` times (Cheng et al. 2021)."""
    m = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    eroded = cv2.erode(m, np.ones((3, 3), np.uint8), iterations=int(width))[1:-1, 1:-1]
    return np.asarray(mask, dtype=bool) & ~eroded.astype(bool)


def boundary_iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
                 dilation_ratio: float = 0.02) -> float:
    """Boundary IoU (Cheng et al. 2021) of bool (H, W) masks: the IoU of their :func:`boundary_region` s of
    width ``dilation_ratio`` x the image diagonal (at least 1 px); ``ignore`` as in :func:`iou`."""
    h, w = np.shape(gt)
    width = max(1, round(dilation_ratio * math.hypot(h, w)))
    return float(iou(boundary_region(pred, width), boundary_region(gt, width), ignore))


def wrong_side_clicks(mask: np.ndarray, clicks: Sequence[Sequence[int]]) -> int:
    """How many clicks ``[x, y, label]`` (label 1 foreground, 0 background) the (H, W) bool ``mask``
    contradicts: a positive click outside it or a negative click inside it."""
    m = np.asarray(mask, dtype=bool)
    return sum(int(m[int(y), int(x)] != bool(label)) for x, y, label in clicks)


def noc(ious: np.ndarray, threshold: float, max_clicks: int | None = None) -> np.ndarray:
    """Number of clicks per object to reach IoU >= ``threshold``: ious (N, K) is the IoU after
    clicks 1..K; an object that never reaches it counts ``max_clicks`` (default K), the RITM
    convention. Returns (N,) int."""
    ious = _as_click_array(ious)
    max_clicks = ious.shape[1] if max_clicks is None else int(max_clicks)
    reached = ious >= threshold
    first = np.argmax(reached, axis=1) + 1
    return np.where(reached.any(axis=1), np.minimum(first, max_clicks), max_clicks)


def nof(ious: np.ndarray, threshold: float) -> int:
    """Number of failures: objects whose IoU never reaches ``threshold`` in the K clicks of
    ious (N, K). (RITM counts NoC == max_clicks instead, which also counts an object that
    reaches the threshold exactly at the last click; this is the strict "never reached".)"""
    return int(np.count_nonzero(~(_as_click_array(ious) >= threshold).any(axis=1)))


def miou_at_k(ious: np.ndarray) -> np.ndarray:
    """Mean IoU over objects after each click: ious (N, K) -> (K,)."""
    return _as_click_array(ious).mean(axis=0)


def click_metrics(ious: np.ndarray, thresholds: Sequence[float], max_clicks: int | None = None) -> dict:
    """NoC / NoF at each threshold and the mIoU@k curve of ious (N, K), as a JSON-ready dict:
    ``{"noc": {"85": 3.2, ...}, "nof": {"85": 1, ...}, "miou_at_k": [K floats]}``."""
    ious = _as_click_array(ious)
    if ious.shape[0] == 0:
        return {"noc": {threshold_key(t): None for t in thresholds},
                "nof": {threshold_key(t): 0 for t in thresholds}, "miou_at_k": []}
    return {
        "noc": {threshold_key(t): float(noc(ious, t, max_clicks).mean()) for t in thresholds},
        "nof": {threshold_key(t): nof(ious, t) for t in thresholds},
        "miou_at_k": [float(v) for v in miou_at_k(ious)],
    }


def threshold_key(threshold: float) -> str:
    """0.85 -> "85" (the NoC@85 naming)."""
    pct = 100.0 * float(threshold)
    return str(int(round(pct))) if abs(pct - round(pct)) < 1e-9 else f"{pct:g}"


def _as_click_array(ious: np.ndarray) -> np.ndarray:
    a = np.asarray(ious, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"per-click IoUs must be (objects, clicks), got shape {a.shape}")
    return a
