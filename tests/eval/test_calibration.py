"""Predicted-IoU quality, IoU-head calibration and everything-threshold fitting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import samkit
from samkit.data.readers import open_dataset
from samkit.data.sample import Sample
from samkit.eval.calibration import (
    calibrate_iou_head,
    calibration_error,
    decoder_work,
    fit_affine,
    fit_amg_thresholds,
    object_ious,
    score_quality,
    select_records,
)
from samkit.predict.boxes import masks_to_boxes, nms
from samkit.predict.everything import AutomaticMaskGenerator


def test_calibration_error_is_zero_when_calibrated_and_measures_a_bias():
    real = np.linspace(0.0, 1.0, 101)
    assert calibration_error(real, real) == pytest.approx(0.0, abs=1e-12)
    assert calibration_error(np.clip(real + 0.2, 0, 1), real) > 0.1


def test_score_quality_ranks_and_picks():
    records = [{"scores": [0.9, 0.5, 0.1], "ious": [0.8, 0.6, 0.2]},
               {"scores": [0.2, 0.7, 0.4], "ious": [0.1, 0.9, 0.3]}]
    q = score_quality(records)
    assert q["spearman"] > 0.8
    assert q["pick_gap"] == pytest.approx(0.0)
    swapped = [{"scores": r["scores"][::-1], "ious": r["ious"]} for r in records]
    assert score_quality(swapped)["pick_gap"] > 0.1


def test_fit_affine_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.2, 0.5, 500)
    a, b = fit_affine(pred, 2.0 * pred - 0.1 + rng.normal(0, 0.01, 500))
    assert a == pytest.approx(2.0, abs=0.05) and b == pytest.approx(-0.1, abs=0.02)


def test_calibrating_the_iou_head_maps_its_outputs_and_keeps_the_layout():
    model = samkit.load_model("samkit_tiny").eval()
    grid = model.img_size // 16
    features = torch.randn(1, 256, grid, grid)
    points = (torch.tensor([[[100.0, 120.0]]]), torch.tensor([[1]]))
    keys = {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        _, before = model.decode(features, points=points, multimask_output=True)
        calibrate_iou_head(model, 1.7, 0.05)
        _, after = model.decode(features, points=points, multimask_output=True)
    assert torch.allclose(after, 1.7 * before + 0.05, atol=1e-4)
    assert {k: v.shape for k, v in model.state_dict().items()} == keys


def _record(mask: np.ndarray, score: float, stability: float) -> dict:
    ys, xs = np.nonzero(mask)
    return {"segmentation": mask, "predicted_iou": score, "stability_score": stability,
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]}


def test_select_records_thresholds_then_nms():
    a = np.zeros((20, 20), bool)
    a[2:10, 2:10] = True
    b = np.zeros((20, 20), bool)
    b[2:10, 2:11] = True  # almost the same box as a
    c = np.zeros((20, 20), bool)
    c[12:18, 12:18] = True
    recs = [_record(a, 0.9, 0.95), _record(b, 0.8, 0.95), _record(c, 0.7, 0.5)]
    assert [r["predicted_iou"] for r in select_records(recs, 0.5, 0.9)] == [0.9]  # b suppressed, c unstable
    assert len(select_records(recs, 0.5, 0.4)) == 2
    assert select_records(recs, 0.95, 0.0) == []


def test_select_records_suppresses_by_the_generators_boxes():
    """Records carry COCO boxes (w = last - first column + 1), the generator's NMS SAM's (x1 = the last column): a
    pair at IoU 0.72 by the first and 0.69 by the second is two masks in a real run, so in the replay too."""
    a = np.zeros((20, 20), bool)
    a[0:10, 0:10] = True
    b = np.zeros((20, 20), bool)
    b[0:9, 0:8] = True
    assert len(nms(masks_to_boxes(torch.from_numpy(np.stack([a, b]))), torch.tensor([0.9, 0.8]), 0.7)) == 2
    assert len(select_records([_record(a, 0.9, 0.95), _record(b, 0.8, 0.95)], 0.5, 0.9)) == 2


def test_select_records_across_crops_prefers_the_smaller_crops_mask():
    a = np.zeros((20, 20), bool)
    a[2:10, 2:10] = True
    b = np.zeros((20, 20), bool)
    b[2:10, 2:11] = True  # almost a's box, found in a crop
    whole, crop = [0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 12.0, 12.0]
    recs = [{**_record(a, 0.9, 0.95), "crop_box": whole}, {**_record(b, 0.6, 0.95), "crop_box": crop}]
    # within one crop the higher predicted IoU wins; across crops the smaller crop's mask, whatever its score
    assert [r["predicted_iou"] for r in select_records(recs, 0.5, 0.9)] == [0.6]
    assert [r["predicted_iou"] for r in select_records([{**r, "crop_box": whole} for r in recs], 0.5, 0.9)] == [0.9]
    assert len(select_records(recs, 0.5, 0.9, crop_nms_thresh=1.0)) == 2


@pytest.mark.slow
def test_select_records_replays_a_real_run_with_crops(data_dir):
    sample = next(iter(open_dataset("berkeley", data_dir / "ECSSD")))  # validation data
    model = samkit.load_model("samkit_tiny")
    common = {"points_per_side": 8, "crop_n_layers": 1, "stability_score_offset": 0.25, "output_mode": "binary_mask"}
    loose = AutomaticMaskGenerator(model, pred_iou_thresh=0.2, stability_score_thresh=0.3, box_nms_thresh=1.0,
                                   crop_nms_thresh=1.0, **common).generate(sample.image)
    light = object_ious(sample, loose)
    assert len({tuple(r["crop_box"]) for r in light}) > 1  # masks from several crops
    for pred_iou, stability in ((0.3, 0.5), (0.4, 0.6)):
        real = AutomaticMaskGenerator(model, pred_iou_thresh=pred_iou, stability_score_thresh=stability,
                                      **common).generate(sample.image)
        replay = select_records(light, pred_iou, stability)
        assert sorted(map(tuple, (r["bbox"] for r in replay))) == sorted(map(tuple, (r["bbox"] for r in real)))


def test_object_ious_keeps_scores_and_each_objects_iou_but_no_mask():
    a = np.zeros((20, 20), bool)
    a[2:10, 2:10] = True  # 64 px
    b = np.zeros((20, 20), bool)
    b[2:10, 2:6] = True  # 32 px, inside a
    ignore = np.zeros((20, 20), bool)
    ignore[2:10, 6:8] = True  # 16 px of a
    sample = Sample("s", np.zeros((20, 20, 3), np.uint8), np.stack([a, b]), ignore)
    recs = [_record(a, 0.9, 0.95), _record(b, 0.7, 0.8)]
    light = object_ious(sample, recs)
    assert [sorted(r) for r in light] == [["bbox", "object_ious", "predicted_iou", "stability_score"]] * 2
    assert [r["predicted_iou"] for r in light] == [0.9, 0.7] and light[1]["bbox"] == recs[1]["bbox"]
    assert light[0]["object_ious"] == [1.0, pytest.approx(32 / 48)]  # the ignored columns count for neither
    assert light[1]["object_ious"] == [pytest.approx(32 / 48), 1.0]
    assert object_ious(sample, []) == []


def _validation_run(found: int = 3, pred_ious: tuple[float, float] = (0.55, 0.65),
                    stability: tuple[float, float, float] = (0.9, 0.9, 0.9)) -> list:
    """Three validation images, each with one object and 13 records: the object's mask on the first ``found``
    images (a 13th small mask instead on the others), and 12 small distinct masks of middling scores, mask j with
    pred IoU ``pred_ious[j % 2]`` (by default pred IoU 0.5 keeps 13 records per image, 0.6 keeps 7) and stability
    ``stability[k]`` on image k."""
    gt = np.zeros((40, 40), bool)
    gt[5:25, 5:25] = True
    runs = []
    for k in range(3):
        recs = [_record(gt, 0.95, 0.97)] if k < found else []
        for j in range(12 if k < found else 13):
            m = np.zeros((40, 40), bool)
            y, x = divmod(j, 4)
            m[26 + 4 * y:29 + 4 * y, 1 + 9 * x:8 + 9 * x] = True
            recs.append(_record(m, pred_ious[j % 2], stability[k]))
        sample = Sample(f"s{k}", np.zeros((40, 40, 3), np.uint8), gt[None], None)
        runs.append((sample, object_ious(sample, recs)))
    return runs


def test_fit_amg_thresholds_prefers_the_strictest_setting_with_enough_masks_and_recall():
    fit = fit_amg_thresholds({(1.0, 0, 1): _validation_run()}, min_masks=10, max_masks=60)
    assert fit["qualified"]
    assert fit["thresholds"]["pred_iou_thresh"] == 0.5  # at 0.6 only 7 of the 13 masks are left
    assert fit["thresholds"]["stability_score_thresh"] == 0.9  # the strictest that keeps them
    assert fit["thresholds"]["stability_score_offset"] == 1.0


def _grid_run(found: int) -> list:
    """:func:`_validation_run` with every small mask at pred IoU 0.65; the object is matched on the first
    ``found`` images only."""
    return _validation_run(found, pred_ious=(0.65, 0.65))


def test_fit_amg_thresholds_takes_the_cheaper_crops_when_they_do_as_well():
    assert decoder_work(0, 1) == 1 and decoder_work(1, 1) == 5 and decoder_work(1, 2) == 2
    # the same masks from full crops and from crops with half the points per side: the cheaper wins
    fit = fit_amg_thresholds({(1.0, 1, 1): _grid_run(3), (1.0, 1, 2): _grid_run(3)}, min_masks=10, max_masks=60)
    assert fit["thresholds"]["crop_n_points_downscale_factor"] == 2 and fit["thresholds"]["crop_n_layers"] == 1
    # one validation object fewer found is within the slack; two are not
    fit = fit_amg_thresholds({(1.0, 1, 1): _grid_run(3), (1.0, 1, 2): _grid_run(2)}, min_masks=10, max_masks=60)
    assert fit["thresholds"]["crop_n_points_downscale_factor"] == 2
    fit = fit_amg_thresholds({(1.0, 1, 1): _grid_run(3), (1.0, 1, 2): _grid_run(1)}, min_masks=10, max_masks=60)
    assert fit["thresholds"]["crop_n_points_downscale_factor"] == 1
    row = next(r for r in fit["table"] if r["crop_n_points_downscale_factor"] == 2)
    assert row["recall"] == pytest.approx(1 / 3) and row["decoder_work"] == 2


def test_fit_amg_thresholds_prefers_no_nearly_bare_image_among_equal_recall():
    runs = _validation_run(stability=(0.55, 0.9, 0.9))  # image 0: less stable
    fit = fit_amg_thresholds({(1.0, 0, 1): runs}, min_masks=10, max_masks=60)
    # stability 0.9 also has a median of 13 masks and full recall, but leaves image 0 with one mask
    assert fit["qualified"]
    assert fit["thresholds"]["pred_iou_thresh"] == 0.5
    assert fit["thresholds"]["stability_score_thresh"] == 0.5
    row = next(r for r in fit["table"] if r["pred_iou_thresh"] == 0.5 and r["stability_score_thresh"] == 0.9)
    assert row["median_masks"] == 13 and row["min_masks"] == 1 and row["recall"] == 1.0


def test_fit_amg_thresholds_keeps_headroom_inside_the_per_image_range():
    runs = _validation_run()
    # both settings keep every image within 5-13 and find every object; 13 sits on the edge
    edge = fit_amg_thresholds({(1.0, 0, 1): runs}, min_masks=5, max_masks=13, per_image=(5, 13), headroom=0.0)
    assert edge["thresholds"]["pred_iou_thresh"] == 0.5  # the most masks on the poorest image
    fit = fit_amg_thresholds({(1.0, 0, 1): runs}, min_masks=5, max_masks=13, per_image=(5, 13), headroom=0.2)
    assert fit["qualified"] and fit["thresholds"]["pred_iou_thresh"] == 0.6  # 7 lies within 6-10.8
    row = next(r for r in fit["table"] if r["pred_iou_thresh"] == 0.5 and r["stability_score_thresh"] == 0.9)
    assert row["in_range"] == 3 and row["in_band"] == 0 and row["recall"] == 1.0
