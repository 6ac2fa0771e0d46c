"""Box-prompted instance segmentation on a COCO-format dataset: mask AP with GT boxes as prompts.

Every non-crowd ground-truth box (COCO XYWH, converted to x0, y0, x1, y1) is a prompt; the boxes
of an image go through ``predict_batch(boxes=, multimask=False)`` in chunks. Each predicted mask
becomes a COCO result (compressed RLE) with the prompt's ``category_id`` and score = predicted
IoU, and pycocotools' ``COCOeval(iouType="segm")`` gives AP, AP50, AP75 and AP small/medium/large
(-1 from COCOeval, "no ground truth in that range", is reported as None).
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from samkit.data.image_io import load_image
from samkit.data.masks import mask_to_rle
from samkit.eval.protocol import BatchSegmenter
from samkit.eval.report import track

STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


def evaluate(predictor: BatchSegmenter, coco_json_path: str | os.PathLike, image_dir: str | os.PathLike,
             max_samples: int | None = None, progress: bool | str = False, batch_size: int = 32) -> dict:
    """Mask AP of ``predictor`` (set_image / predict_batch) prompted with the GT boxes of the
    COCO annotation file; images are read from ``image_dir / file_name``. ``max_samples``: the first
    N images (by id) that have a non-crowd instance. Returns a JSON-ready dict of the AP figures."""
    from pycocotools.cocoeval import COCOeval

    gt = load_coco(coco_json_path)
    image_ids = [i for i in sorted(gt.getImgIds()) if _prompt_anns(gt, i)]
    results, image_ids_done, image_times = [], [], []
    for image_id in track(image_ids, max_samples, progress, "boxes"):
        t0 = time.perf_counter()
        results.extend(predict_image(predictor, gt, image_id, Path(image_dir), batch_size))
        image_times.append(time.perf_counter() - t0)
        image_ids_done.append(image_id)
    stats = [0.0] * len(STAT_NAMES)
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results)
            ev = COCOeval(gt, dt, iouType="segm")
            ev.params.imgIds = image_ids_done
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [float(s) for s in ev.stats[: len(STAT_NAMES)]]
    return {
        "protocol": "boxes",
        "annotations": str(coco_json_path),
        "num_images": len(image_ids_done),
        "num_instances": len(results),
        **{name: (None if s < 0 else s) for name, s in zip(STAT_NAMES, stats, strict=False)},
        "seconds_per_image": float(np.mean(image_times)) if image_times else None,
    }


def predict_image(predictor: BatchSegmenter, gt: Any, image_id: int, image_dir: Path,
                  batch_size: int = 32) -> list[dict]:
    """COCO segmentation results for the non-crowd GT boxes of one image (one per box)."""
    info = gt.loadImgs(image_id)[0]
    anns = _prompt_anns(gt, image_id)
    predictor.set_image(load_image(image_dir / info["file_name"]))
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # XYWH -> x0, y0, x1, y1
    results = []
    for start in range(0, len(anns), batch_size):
        out = predictor.predict_batch(boxes=boxes[start:start + batch_size], multimask=False)
        for ann, masks, scores in zip(anns[start:start + batch_size], out.masks, out.scores, strict=False):
            results.append({"image_id": image_id, "category_id": ann["category_id"],
                            "segmentation": mask_to_rle(masks[0]), "score": float(scores[0])})
    return results


def load_coco(path: str | os.PathLike) -> Any:
    """pycocotools COCO object of an annotation file, without its console chatter."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _prompt_anns(gt: Any, image_id: int) -> list[dict]:
    return [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd", 0)]
