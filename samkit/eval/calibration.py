"""Does a model's predicted IoU mean something? Score quality, IoU-head calibration and the
everything-mode thresholds a model recommends.

* :func:`score_quality`: from single-point records (every mask's predicted and real IoU), the
  Spearman rank correlation and calibration error of predicted vs real IoU, and how much picking the
  top-scored mask loses against the oracle pick.
* :func:`fit_affine` / :func:`calibrate_iou_head`: a least-squares map real ~ a * predicted + b, folded
  into the IoU head's last linear layer (the state-dict layout is unchanged).
* :func:`fit_amg_thresholds`: the everything-mode thresholds and crop layers on validation images that
  keep a useful number of masks on each image and find the validation objects, from the runs' records reduced by
  :func:`object_ious` (scores, box and IoU with each object; no mask kept in memory).

Fit on a validation split of the training data, never on an evaluation set.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from samkit._optional import require
from samkit.data.sample import Sample
from samkit.eval.metrics import iou
from samkit.models.sam import Sam
from samkit.predict.boxes import nms


def score_pairs(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, real) IoU of every mask of single-point ``records`` (each with ``scores`` and
    ``ious`` lists, as :func:`samkit.eval.single_point.evaluate` returns them): two (N,) arrays."""
    pred = np.concatenate([np.asarray(r["scores"], dtype=np.float64) for r in records]) if records else np.zeros(0)
    real = np.concatenate([np.asarray(r["ious"], dtype=np.float64) for r in records]) if records else np.zeros(0)
    return pred, real


def _spearman(pred: np.ndarray, real: np.ndarray) -> float:
    """Spearman rank correlation of two (N,) arrays (scipy, the ``eval`` extra)."""
    require("scipy", "eval", "score calibration")
    from scipy.stats import spearmanr

    return float(spearmanr(pred, real).statistic)


def calibration_error(pred: np.ndarray, real: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of predicted IoU: pairs binned by predicted value (``bins`` equal
    bins on [0, 1]), |mean predicted - mean real| per bin weighted by the bin's share."""
    pred, real = np.asarray(pred, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if pred.size == 0:
        return float("nan")
    which = np.clip((pred * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(pred[sel].mean() - real[sel].mean())
    return float(total)


def score_quality(records: Sequence[dict]) -> dict:
    """Predicted-IoU quality of single-point ``records``: Spearman and Pearson correlation of
    predicted vs real IoU over all masks, calibration error (ECE, 10 bins), mean |error| and squared error
    (what the affine calibration minimises), and mIoU
    of the top-scored mask vs the oracle mask (``pick_gap`` = oracle - by score)."""
    pred, real = score_pairs(records)
    by_score = [r["ious"][int(np.argmax(r["scores"]))] for r in records]
    oracle = [max(r["ious"]) for r in records]
    ok = pred.size > 1 and np.ptp(pred) > 0 and np.ptp(real) > 0
    return {
        "num_objects": len(records),
        "num_masks": int(pred.size),
        "spearman": _spearman(pred, real) if ok else None,
        "pearson": float(np.corrcoef(pred, real)[0, 1]) if ok else None,
        "calibration_error": calibration_error(pred, real),
        "mean_abs_error": float(np.abs(pred - real).mean()) if pred.size else None,
        "mean_squared_error": float(np.square(pred - real).mean()) if pred.size else None,
        "predicted_range": [float(pred.min()), float(pred.max())] if pred.size else None,
        "miou_by_score": float(np.mean(by_score)) if records else None,
        "miou_oracle": float(np.mean(oracle)) if records else None,
        "pick_gap": float(np.mean(oracle) - np.mean(by_score)) if records else None,
    }


def fit_affine(pred: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """Least-squares (a, b) with real ~ a * pred + b; a is kept >= 0.05 so the map never reverses or
    flattens the ranking."""
    pred, real = np.asarray(pred, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if pred.size < 2 or np.ptp(pred) == 0:
        return 1.0, float(real.mean() - pred.mean()) if pred.size else 0.0
    a, b = np.polyfit(pred, real, 1)
    a = max(float(a), 0.05)
    return a, float(real.mean() - a * pred.mean())


@torch.no_grad()
def calibrate_iou_head(model: Sam, a: float, b: float) -> None:
    """Fold ``iou -> a * iou + b`` into the mask decoder's IoU head (its last Linear layer), in place."""
    layers = [m for m in model.mask_decoder.iou_prediction_head.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("the model's IoU head has no linear layer to calibrate")
    last = layers[-1]
    last.weight.mul_(a)
    last.bias.mul_(a).add_(b)


def amg_candidates(pred_iou: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88),
                   stability: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)) -> list[dict[str, float]]:
    """Threshold settings to try, strictest first (by pred_iou + stability, descending)."""
    grid = [{"pred_iou_thresh": p, "stability_score_thresh": s} for p in pred_iou for s in stability]
    return sorted(grid, key=lambda g: g["pred_iou_thresh"] + g["stability_score_thresh"], reverse=True)


def _nms_records(records: Sequence[dict], scores: Sequence[float], thresh: float) -> list[dict]:
    """Box NMS over ``records`` (``bbox`` [x, y, w, h]) by ``scores``, kept in score order, on the boxes the
    generator's NMS sees: a record's ``bbox`` is COCO's (w = last - first column + 1), the generator's boxes are
    SAM's (x1 = the last column, :func:`~samkit.predict.boxes.masks_to_boxes`), and an IoU near the threshold
    depends on which."""
    if len(records) < 2:
        return list(records)
    xywh = torch.tensor([r["bbox"] for r in records], dtype=torch.float64)
    boxes = torch.cat([xywh[:, :2], xywh[:, :2] + (xywh[:, 2:] - 1).clamp_min(0)], dim=1)
    return [records[i] for i in nms(boxes, torch.tensor(scores, dtype=torch.float64), thresh).tolist()]


def select_records(records: Sequence[dict], pred_iou_thresh: float, stability_score_thresh: float,
                   box_nms_thresh: float = 0.7, crop_nms_thresh: float = 0.7) -> list[dict]:
    """What everything-mode keeps of ``records`` from a run with looser thresholds and no NMS
    (``box_nms_thresh=crop_nms_thresh=1.0``): the records passing both thresholds, box NMS by predicted
    IoU within each crop (``crop_box``; records without one are one crop), then, when they come from
    several crops, box NMS across crops preferring the smaller crop's mask (as the generator)."""
    kept = [r for r in records
            if r["predicted_iou"] > pred_iou_thresh and r["stability_score"] >= stability_score_thresh]
    by_crop: dict[tuple, list[dict]] = {}
    for r in kept:
        by_crop.setdefault(tuple(r.get("crop_box", ())), []).append(r)
    kept = [r for group in by_crop.values()
            for r in _nms_records(group, [r["predicted_iou"] for r in group], box_nms_thresh)]
    if len(by_crop) > 1:
        kept = _nms_records(kept, [1.0 / max(crop[2] * crop[3], 1.0) for crop in
                                   (r["crop_box"] for r in kept)], crop_nms_thresh)
    return kept


def object_ious(sample: Sample, records: Sequence[dict]) -> list[dict]:
    """Everything-mode ``records`` (``output_mode="binary_mask"``) of ``sample`` reduced to what
    :func:`fit_amg_thresholds` needs: ``predicted_iou``, ``stability_score``, ``bbox`` and
    ``object_ious`` (IoU with each of the sample's object masks); the (H,W) masks are dropped, so a
    fit over many validation images holds no masks in memory."""
    return [{"predicted_iou": r["predicted_iou"], "stability_score": r["stability_score"], "bbox": r["bbox"],
             **({"crop_box": r["crop_box"]} if "crop_box" in r else {}),
             "object_ious": [float(iou(r["segmentation"], gt, sample.ignore)) for gt in sample.masks]}
            for r in records]


def decoder_work(crop_n_layers: int, downscale: int) -> float:
    """Decoder calls of an everything run relative to one whole-image grid: crop layer i has 4**i crops
    of ``1 / downscale**i`` the points per side."""
    return sum(4 ** i / downscale ** (2 * i) for i in range(crop_n_layers + 1))


def fit_amg_thresholds(runs: Mapping[tuple[float, int, int], Sequence[tuple[Sample, list[dict]]]],
                       candidates: Sequence[dict[str, float]] | None = None,
                       min_masks: int = 10, max_masks: int = 60, recall_iou: float = 0.5,
                       per_image: tuple[int, int] = (5, 60), headroom: float = 0.2) -> dict:
    """Choose everything-mode thresholds and crops on validation images.

    ``runs``: for each (stability offset, crop layers, crop points downscale factor), per validation
    sample (one or more object masks) the records of one everything-mode run with those settings, the
    loosest thresholds of ``candidates``, ``box_nms_thresh=crop_nms_thresh=1.0`` (no NMS) and
    ``output_mode="binary_mask"``, reduced by :func:`object_ious`; each setting is then applied with
    :func:`select_records`. A setting qualifies when the median number of masks per image lies in
    [min_masks, max_masks] and no image gets none. Among those: the most images whose count lies in
    ``per_image`` (what a user of everything-mode expects on every image); of these, the most images whose
    count keeps ``headroom`` inside that range (``lo * (1 + headroom) <= count <= hi / (1 + headroom)``:
    a setting at the edge of the range on validation images crosses it on the next ones); of these, the
    settings whose object recall (share of validation objects matched by a kept mask at IoU >=
    ``recall_iou``) is within one validation object of the best, and of those the cheapest
    (:func:`decoder_work`), then the best recall, the most masks on the poorest image, and the first in
    table order (runs in the order given, the strictest setting first). When none qualifies, the setting
    whose median count is nearest the range (then the best recall) is chosen and ``qualified`` is False.
    Returns {"thresholds" (with ``stability_score_offset``, ``crop_n_layers`` and
    ``crop_n_points_downscale_factor``), "qualified", "table"}.
    """
    candidates = list(candidates or amg_candidates())
    lo, hi = per_image
    band = (lo * (1.0 + headroom), hi / (1.0 + headroom))
    table = []
    objects = 0  # validation objects (the same samples in every run)
    for (offset, crop_n_layers, downscale), per_sample in runs.items():
        for setting in candidates:
            counts, hits, objects = [], 0, 0
            for sample, records in per_sample:
                kept = select_records(records, setting["pred_iou_thresh"], setting["stability_score_thresh"])
                counts.append(len(kept))
                objects += len(sample.masks)
                hits += sum(any(r["object_ious"][j] >= recall_iou for r in kept) for j in range(len(sample.masks)))
            table.append({**setting, "stability_score_offset": offset, "crop_n_layers": crop_n_layers,
                          "crop_n_points_downscale_factor": downscale,
                          "decoder_work": decoder_work(crop_n_layers, downscale),
                          "median_masks": float(np.median(counts)), "min_masks": int(min(counts)),
                          "max_masks": int(max(counts)), "in_range": sum(lo <= c <= hi for c in counts),
                          "in_band": sum(band[0] <= c <= band[1] for c in counts),
                          "recall": hits / max(objects, 1)})
    ok = [row for row in table if min_masks <= row["median_masks"] <= max_masks and row["min_masks"] > 0]
    if ok:
        in_range = max(row["in_range"] for row in ok)
        best = [row for row in ok if row["in_range"] == in_range]
        in_band = max(row["in_band"] for row in best)
        best = [row for row in best if row["in_band"] == in_band]
        slack = 1.0 / max(objects, 1) + 1e-9  # one validation object
        recall = max(row["recall"] for row in best)
        near = [row for row in best if row["recall"] >= recall - slack]
        # max() keeps the first of equals: table order breaks the last tie
        chosen = max(near, key=lambda row: (-row["decoder_work"], round(row["recall"], 9), row["min_masks"]))
    else:
        def miss(row: dict) -> float:
            return max(min_masks - row["median_masks"], row["median_masks"] - max_masks, 0.0)
        chosen = min(table, key=lambda row: (miss(row), -row["recall"]))
    keys = ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "crop_n_layers",
            "crop_n_points_downscale_factor")
    return {"thresholds": {k: chosen[k] for k in keys}, "qualified": bool(ok), "table": table}
