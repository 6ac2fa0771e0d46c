"""The last step of making a model to ship: calibrate its IoU head and store the everything-mode
thresholds it recommends, both fitted on a validation split of the training data (never on an
evaluation set).

1. Single-point records on the validation objects (every mask's predicted and real IoU).
2. An affine map real ~ a * predicted + b, folded into the IoU head's last layer
   (:func:`samkit.eval.calibration.calibrate_iou_head`; the state-dict layout is unchanged).
3. One loose everything-mode run per validation image with the calibrated model, then the strictest
   thresholds that keep 10-60 masks per image with the best object recall
   (:func:`samkit.eval.calibration.fit_amg_thresholds`).
4. The model file is written with ``amg_pred_iou_thresh``, ``amg_stability_score_thresh``,
   ``amg_stability_score_offset`` and ``iou_calibration`` in its metadata; ``samkit.load_model``
   puts the thresholds in ``model.recommended_amg``, which everything-mode uses when the user sets none.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from samkit.models.model_file import ModelFileInfo, write_model_file
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

    def to_dict(self) -> dict:
        return {"iou_calibration": {"a": self.affine[0], "b": self.affine[1]}, "score_quality_before": self.before,
                "score_quality_after": self.after, "amg_thresholds": self.thresholds,
                "amg_qualified": self.qualified, "amg_table": self.table}


def calibrate_model(model: Sam, point_samples: Sequence[Sample], amg_samples: Sequence[Sample],
                    points_per_side: int = 32) -> CalibrationReport:
    """Calibrate ``model``'s IoU head in place on ``point_samples`` and fit everything-mode thresholds
    on ``amg_samples`` (validation data); returns the report. Sets ``model.recommended_amg``."""
    records = single_point(Predictor(model), point_samples)["objects"]
    before = score_quality(records)
    a, b = fit_affine(*score_pairs(records))
    calibrate_iou_head(model, a, b)
    for r in records:
        r["scores"] = [a * s + b for s in r["scores"]]
    after = score_quality(records)
    grid = amg_candidates()
    loosest = min(g["pred_iou_thresh"] for g in grid), min(g["stability_score_thresh"] for g in grid)
    runs = {}
    for offset in AMG_OFFSETS:
        generator = AutomaticMaskGenerator(model, points_per_side=points_per_side, pred_iou_thresh=loosest[0],
                                           stability_score_thresh=loosest[1], stability_score_offset=offset,
                                           box_nms_thresh=1.0, output_mode="binary_mask")
        runs[offset] = [(sample, object_ious(sample, generator.generate(sample.image))) for sample in amg_samples]
    fit = fit_amg_thresholds(runs, grid)
    thresholds = fit["thresholds"]
    model.recommended_amg = {f"amg_{k}": float(v) for k, v in thresholds.items()}
    return CalibrationReport((a, b), before, after, thresholds, fit["qualified"], fit["table"])


def write_calibrated(model: Sam, report: CalibrationReport, path: str | os.PathLike) -> Path:
    """Write the calibrated model file with its recommended thresholds in the metadata."""
    extra = {f"amg_{k}": f"{v:.4f}" for k, v in report.thresholds.items()}
    extra["iou_calibration"] = json.dumps({"a": report.affine[0], "b": report.affine[1]})
    info = ModelFileInfo(arch=model.arch, img_size=model.img_size, extra=extra)
    return write_model_file(model, path, info)


def split_validation(samples: Sequence[Sample], point_count: int, amg_count: int,
                     seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Two disjoint random subsets of ``samples`` (sizes clipped to what there is): for the IoU head
    and for the everything thresholds."""
    order = np.random.default_rng(seed).permutation(len(samples))
    points = [samples[int(i)] for i in order[:point_count]]
    amg = [samples[int(i)] for i in order[point_count:point_count + amg_count]]
    return points, amg
