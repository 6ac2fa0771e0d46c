"""Interactive segmentation benchmark (RITM protocol): NoC / NoF at IoU thresholds, mIoU@k.

Every instance mask of every Sample is one object. Click 1 is simulated from the empty
prediction and answered with three masks (multimask), of which the one with the highest predicted
IoU is kept; clicks 2..K (all earlier clicks included) are answered with one mask, with the kept
mask's low-res logits fed back as ``mask_input``. Each next click is :func:`samkit.eval.clicks.next_click`
on the kept mask. Clicks go to the predictor as integer pixel indices (x, y), as RITM-based SAM
evaluations pass them. IoU excludes the sample's ``ignore`` pixels. A prediction with no error
pixel left gets no more clicks: its IoU is carried to click K. Boundary IoU
(:func:`~samkit.eval.metrics.boundary_iou`) is reported per click too, and how often a click's own pixel
ends on the wrong side of the mask answering it.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from samkit.data.sample import Sample
from samkit.eval.clicks import next_click
from samkit.eval.metrics import boundary_iou, click_metrics, iou, wrong_side_clicks
from samkit.eval.protocol import Segmenter
from samkit.eval.report import track


def evaluate(predictor: Segmenter, samples: Iterable[Sample], max_clicks: int = 20,
             iou_thresholds: Sequence[float] = (0.85, 0.90, 0.95), max_samples: int | None = None,
             progress: bool | str = False) -> dict:
    """Run the click protocol on every object of ``samples`` with ``predictor`` (anything with
    ``set_image(image)`` and ``predict(points=, labels=, mask_input=, multimask=)`` returning masks,
    scores, low_res_logits). Returns a JSON-ready dict: ``noc``/``nof`` keyed "85", "90", ...,
    ``miou_at_k`` (max_clicks floats), timings, and per-object IoUs and clicks."""
    objects, click_times, image_times, wrong = [], [], [], []
    skipped = images = 0
    for sample in track(samples, max_samples, progress, "interactive"):
        t0 = time.perf_counter()
        predictor.set_image(sample.image)
        image_times.append(time.perf_counter() - t0)
        images += 1
        for index, gt in enumerate(sample.masks):
            run = simulate_object(predictor, gt, sample.ignore, max_clicks)
            if run is None:
                skipped += 1
                continue
            click_times.extend(run.seconds)
            wrong.extend(run.wrong_side)
            objects.append({"name": sample.name, "instance": index, "ious": [float(v) for v in run.ious],
                            "boundary_ious": [float(v) for v in run.boundary_ious], "clicks": run.clicks})
    all_ious = np.array([o["ious"] for o in objects], dtype=np.float64).reshape(len(objects), max_clicks)
    boundary = np.array([o["boundary_ious"] for o in objects], dtype=np.float64).reshape(len(objects), max_clicks)
    return {
        "protocol": "interactive",
        "max_clicks": int(max_clicks),
        "iou_thresholds": [float(t) for t in iou_thresholds],
        "num_images": images,
        "num_objects": len(objects),
        "skipped_objects": skipped,
        **click_metrics(all_ious, iou_thresholds, max_clicks),
        "boundary_iou_at_k": [float(v) for v in boundary.mean(axis=0)] if len(objects) else [],
        "click_wrong_side_rate": float(np.mean(wrong)) if wrong else None,
        "seconds_per_click": float(np.mean(click_times)) if click_times else None,
        "seconds_per_image": float(np.mean(image_times)) if image_times else None,
        "objects": objects,
    }


class ObjectRun(NamedTuple):
    """One object's session: IoU and boundary IoU after each click (max_clicks,), the clicks as
    [x, y, label], the seconds of each ``predict`` call, and per click whether its own pixel ended on
    the wrong side of the mask answering it."""

    ious: np.ndarray
    boundary_ious: np.ndarray
    clicks: list[list[int]]
    seconds: list[float]
    wrong_side: list[bool]


def simulate_object(predictor: Segmenter, gt: np.ndarray, ignore: np.ndarray | None,
                    max_clicks: int) -> ObjectRun | None:
    """Click on one object (predictor's image already set). gt (H, W) bool, ignore (H, W) bool.
    None when gt has no pixel to click on."""
    pred = np.zeros_like(gt, dtype=bool)
    ious = np.empty(max_clicks, dtype=np.float64)
    boundary = np.empty(max_clicks, dtype=np.float64)
    wrong: list[bool] = []
    points: list[list[int]] = []
    labels: list[int] = []
    seconds: list[float] = []
    mask_input = None
    for k in range(max_clicks):
        click = next_click(pred, gt, ignore, clicked=[(y, x) for x, y in points])
        if click is None:
            if k == 0:
                return None
            ious[k:] = ious[k - 1]  # nothing left to correct
            boundary[k:] = boundary[k - 1]
            break
        points.append([click.x, click.y])
        labels.append(int(click.is_positive))
        t0 = time.perf_counter()
        out = predictor.predict(points=np.asarray(points, dtype=np.float64), labels=np.asarray(labels),
                                mask_input=mask_input, multimask=k == 0)
        seconds.append(time.perf_counter() - t0)
        best = int(np.argmax(out.scores))
        pred = np.asarray(out.masks[best], dtype=bool)
        mask_input = out.low_res_logits[best][None]
        ious[k] = iou(pred, gt, ignore)
        boundary[k] = boundary_iou(pred, gt, ignore)
        wrong.append(wrong_side_clicks(pred, [[click.x, click.y, int(click.is_positive)]]) > 0)
    return ObjectRun(ious, boundary, [[x, y, lab] for (x, y), lab in zip(points, labels, strict=False)], seconds, wrong)
