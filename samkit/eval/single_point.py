"""SAM's single-point benchmark: one click at each object's interior point (the pixel farthest
from its boundary, RITM's first click), three masks (multimask); mIoU of the mask with the highest
predicted IoU and of the oracle (the best of the three against the ground truth)."""
from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from samkit.data.sample import Sample
from samkit.eval.clicks import interior_point
from samkit.eval.metrics import iou
from samkit.eval.protocol import Segmenter
from samkit.eval.report import track


def evaluate(predictor: Segmenter, samples: Iterable[Sample], max_samples: int | None = None,
             progress: bool | str = False) -> dict:
    """One-click mIoU of ``predictor`` (set_image / predict) on every object of ``samples``.

    Returns a JSON-ready dict: ``miou`` (highest-scored mask), ``miou_oracle`` (best of the
    masks), counts, seconds per click, and per object the click and the IoU of each mask.
    """
    objects, seconds = [], []
    skipped = images = 0
    for sample in track(samples, max_samples, progress, "single-point"):
        predictor.set_image(sample.image)
        images += 1
        for index, gt in enumerate(sample.masks):
            click = interior_point(gt, sample.ignore)
            if click is None:
                skipped += 1
                continue
            t0 = time.perf_counter()
            out = predictor.predict(points=np.array([[click.x, click.y]], dtype=np.float64), labels=np.array([1]),
                                    multimask=True)
            seconds.append(time.perf_counter() - t0)
            ious = np.atleast_1d(iou(np.asarray(out.masks, dtype=bool), gt, sample.ignore))
            best = int(np.argmax(out.scores))
            objects.append({"name": sample.name, "instance": index, "point": [click.x, click.y],
                            "ious": [float(v) for v in ious], "scores": [float(v) for v in np.atleast_1d(out.scores)],
                            "chosen": best,
                            "iou": float(ious[best]), "iou_oracle": float(ious.max())})
    return {
        "protocol": "single_point",
        "num_images": images,
        "num_objects": len(objects),
        "skipped_objects": skipped,
        "miou": float(np.mean([o["iou"] for o in objects])) if objects else None,
        "miou_oracle": float(np.mean([o["iou_oracle"] for o in objects])) if objects else None,
        "seconds_per_click": float(np.mean(seconds)) if seconds else None,
        "objects": objects,
    }
