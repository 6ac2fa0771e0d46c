"""The last step of making a model to ship: calibrate its IoU head and store the everything-mode
thresholds it recommends, both fitted on a validation split of the training data (never on an
evaluation set).

1. Single-point records on the validation objects (every mask's predicted and real IoU).
2. An affine map real ~ a * predicted + b, folded into the IoU head's last layer
   (:func:`samkit.eval.calibration.calibrate_iou_head`; the state-dict layout is unchanged).
3. One loose everything-mode run per validation image with the calibrated model, for each stability
   offset and crop setting tried, then the setting that keeps 5-60 masks on the most images (and a
   median of 10-60, none empty), the cheapest within one validation object of the best object recall
   (:func:`samkit.eval.calibration.fit_amg_thresholds`).
4. The model file is written with ``amg_pred_iou_thresh``, ``amg_stability_score_thresh``,
   ``amg_stability_score_offset``, ``amg_crop_n_layers``, ``amg_crop_n_points_downscale_factor`` and
   ``iou_calibration`` in its metadata; ``samkit.load_model`` puts them in ``model.recommended_amg``,
   which everything-mode uses when the user sets none.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from samkit.data.sample import Sample
from samkit.eval.calibration import (
    amg_candidates,
    calibrate_iou_head,
    fit_affine,
    fit_amg_thresholds,
    object_ious,
    score_pairs,
    score_quality,
)
from samkit.eval.single_point import evaluate as single_point
from samkit.models.model_file import AMG_KEYS, ModelFileInfo, write_model_file
from samkit.models.sam import Sam
from samkit.predict.everything import AutomaticMaskGenerator
from samkit.predict.predictor import Predictor

AMG_OFFSETS = (1.0, 0.5, 0.25)  # stability offsets tried: SAM's, and softer ones for models with soft logits


@dataclass
class CalibrationReport:
    """What :func:`calibrate_model` measured and chose (JSON-ready through :meth:`to_dict`)."""

    affine: tuple[float, float]
    before: dict
    after: dict
    thresholds: dict[str, float]
    qualified: bool
    table: list[dict] = field(default_factory=list)
    head_calibrated: bool = True  # False: the IoU head was measured, not changed (``affine`` is (1, 0))

    def to_dict(self) -> dict:
        return {"iou_calibration": {"a": self.affine[0], "b": self.affine[1]}, "head_calibrated": self.head_calibrated,
                "score_quality_before": self.before,
                "score_quality_after": self.after, "amg_thresholds": self.thresholds,
                "amg_qualified": self.qualified, "amg_table": self.table}


def calibrate_model(model: Sam, point_samples: Sequence[Sample], amg_samples: Sequence[Sample],
                    points_per_side: int = 32, crop_layers: Sequence[int] = (0,),
                    offsets: Sequence[float] = AMG_OFFSETS, crop_downscales: Sequence[int] = (1,),
                    calibrate_head: bool = True) -> CalibrationReport:
    """Calibrate ``model``'s IoU head in place on ``point_samples`` (unless ``calibrate_head`` is
    False: then it is only measured) and fit everything-mode settings on ``amg_samples`` (validation
    data), trying each stability offset of ``offsets`` with each number of ``crop_layers`` and, with
    crops, each points downscale factor of ``crop_downscales`` (the cheaper wins when it does as well:
    :func:`~samkit.eval.calibration.fit_amg_thresholds`); returns the report. Sets
    ``model.recommended_amg``."""
    records = single_point(Predictor(model), point_samples)["objects"]
    before = score_quality(records)
    a, b = 1.0, 0.0
    if calibrate_head:
        a, b = fit_affine(*score_pairs(records))
        calibrate_iou_head(model, a, b)
    for r in records:
        r["scores"] = [a * s + b for s in r["scores"]]
    after = score_quality(records)
    grid = amg_candidates()
    loosest = min(g["pred_iou_thresh"] for g in grid), min(g["stability_score_thresh"] for g in grid)
    runs = {}
    crops = [(layers, factor) for layers in sorted(set(crop_layers))
             for factor in (sorted(set(crop_downscales)) if layers else [1])]
    for layers, factor in crops:
        for offset in offsets:
            generator = AutomaticMaskGenerator(model, points_per_side=points_per_side, pred_iou_thresh=loosest[0],
                                               stability_score_thresh=loosest[1], stability_score_offset=offset,
                                               box_nms_thresh=1.0, crop_n_layers=layers, crop_nms_thresh=1.0,
                                               crop_n_points_downscale_factor=factor, output_mode="binary_mask")
            runs[offset, layers, factor] = [(sample, object_ious(sample, generator.generate(sample.image)))
                                            for sample in amg_samples]
    fit = fit_amg_thresholds(runs, grid)
    thresholds = fit["thresholds"]
    model.recommended_amg = {f"amg_{k}": float(v) for k, v in thresholds.items()}
    return CalibrationReport((a, b), before, after, thresholds, fit["qualified"], fit["table"], calibrate_head)


def write_calibrated(model: Sam, report: CalibrationReport, path: str | os.PathLike,
                     source: ModelFileInfo | None = None) -> Path:
    """Write the calibrated model file with its recommended everything settings in the metadata.
    ``source``: the metadata of the file the model came from, kept but for what the calibration sets
    (its ``arch`` and ``iou_calibration`` stay when the head was not re-calibrated)."""
    base = source or ModelFileInfo()
    base = replace(base, arch=base.arch or model.arch)  # a checkpoint without metadata: the model's own
    extra = {k: v for k, v in base.extra.items() if k not in AMG_KEYS}
    extra.update({f"amg_{k}": f"{v:g}" if k.startswith("crop_") else f"{v:.4f}" for k, v in report.thresholds.items()})
    if report.head_calibrated:
        extra["iou_calibration"] = json.dumps({"a": report.affine[0], "b": report.affine[1]})
    return write_model_file(model, path, replace(base, img_size=model.img_size, extra=extra))


def split_validation(samples: Sequence[Sample], point_count: int, amg_count: int,
                     seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Two disjoint random subsets of ``samples`` (sizes clipped to what there is): for the IoU head
    and for the everything thresholds."""
    order = np.random.default_rng(seed).permutation(len(samples))
    points = [samples[int(i)] for i in order[:point_count]]
    amg = [samples[int(i)] for i in order[point_count:point_count + amg_count]]
    return points, amg
