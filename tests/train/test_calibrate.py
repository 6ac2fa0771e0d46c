"""Calibrating a model to ship: IoU head fitted on validation objects, everything thresholds stored in
the model file and used by everything-mode when the user sets none."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import samkit
from samkit.cli import main
from samkit.data.readers import open_dataset
from samkit.predict.everything import AutomaticMaskGenerator
from samkit.train.calibrate import calibrate_model, split_validation, write_calibrated


@pytest.mark.slow
def test_calibrated_model_file_carries_its_everything_thresholds(data_dir, tmp_path):
    val = open_dataset("berkeley", data_dir / "ECSSD")  # a training-data split, never an evaluation set
    points, amg = split_validation(val, 4, 1)
    assert not {s.name for s in points} & {s.name for s in amg}
    model = samkit.load_model("samkit_tiny")
    report = calibrate_model(model, points, amg, points_per_side=8)
    assert report.after["num_masks"] == 12
    # the least-squares affine map is folded into the head: its squared residual is what is left, never more
    # than before (the mean |error| may grow: the fit minimises the squared one)
    assert report.after["mean_squared_error"] <= report.before["mean_squared_error"] + 1e-6
    assert set(report.thresholds) == {"pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                                      "crop_n_layers", "crop_n_points_downscale_factor"}
    path = write_calibrated(model, report, tmp_path / "calibrated.fp16.safetensors")

    loaded = samkit.load_model(path)
    expected = {f"amg_{k}": pytest.approx(v, abs=1e-4) for k, v in report.thresholds.items()}
    assert loaded.recommended_amg == expected
    generator = AutomaticMaskGenerator(loaded, points_per_side=4)
    assert generator.pred_iou_thresh == pytest.approx(report.thresholds["pred_iou_thresh"], abs=1e-4)
    assert generator.stability_score_offset == pytest.approx(report.thresholds["stability_score_offset"], abs=1e-4)
    assert generator.crop_n_layers == report.thresholds["crop_n_layers"] == 0  # only 0 was tried
    explicit = AutomaticMaskGenerator(loaded, points_per_side=4, pred_iou_thresh=0.99)
    assert explicit.pred_iou_thresh == 0.99  # a user's setting wins over the recommendation


def test_cli_calibrate_thresholds_only_keeps_the_tensors_and_stores_the_crop_layers(data_dir, tmp_path):
    out = tmp_path / "tiny.fp16.safetensors"
    code = main(["calibrate", "samkit_tiny", "--val-root", str(data_dir / "ECSSD"), "--points", "2", "--images", "1",
                 "--points-per-side", "4", "--crop-layers", "1", "0", "--crop-downscales", "2", "1",
                 "--offsets", "0.25", "--thresholds-only",
                 "--out", str(out)])
    assert code == 0
    source = samkit.load_model("samkit_tiny")
    with safe_open(source.weights, "pt") as a, safe_open(str(out), "pt") as b:
        names = a.keys()
        assert set(names) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in names)  # the IoU head untouched
        kept, meta = a.metadata(), b.metadata()
    assert meta["iou_calibration"] == kept["iou_calibration"]  # the file's own calibration record stays
    assert meta["arch"] == kept["arch"] and meta["img_size"] == kept["img_size"]
    report = json.loads(out.with_suffix(".calibration.json").read_text())
    assert not report["head_calibrated"] and report["iou_calibration"] == {"a": 1.0, "b": 0.0}
    rows = report["amg_table"]
    runs = {(r["stability_score_offset"], r["crop_n_layers"], r["crop_n_points_downscale_factor"]) for r in rows}
    assert runs == {(0.25, 0, 1), (0.25, 1, 1), (0.25, 1, 2)}  # no downscale factor without crops
    assert rows[0]["crop_n_layers"] == 0  # fewer crop layers first
    chosen = report["amg_thresholds"]
    assert int(meta["amg_crop_n_layers"]) == chosen["crop_n_layers"]
    loaded = samkit.load_model(out).recommended_amg
    assert loaded["amg_crop_n_layers"] == chosen["crop_n_layers"]
    assert loaded["amg_crop_n_points_downscale_factor"] == chosen["crop_n_points_downscale_factor"]


def test_cli_calibrate_writes_the_model_and_its_report(data_dir, tmp_path, capsys):
    out = tmp_path / "tiny.fp16.safetensors"
    code = main(["calibrate", "samkit_tiny", "--val-root", str(data_dir / "ECSSD"), "--points", "2",
                 "--images", "1", "--points-per-side", "4", "--out", str(out)])
    assert code == 0
    report = json.loads(out.with_suffix(".calibration.json").read_text())
    assert samkit.load_model(out).recommended_amg["amg_pred_iou_thresh"] == pytest.approx(
        report["amg_thresholds"]["pred_iou_thresh"], abs=1e-4)
    assert main(["calibrate", "samkit_tiny", "--val-root", str(data_dir / "ECSSD"), "--out",
                 str(tmp_path / "x.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
