"""Segment everything: each filter against hand-made cases (a scripted model), then samkit_tiny on real images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch import nn

import samkit
from samkit.data.readers import open_dataset
from samkit.predict.everything import (
    FILTERS,
    AutomaticMaskGenerator,
    EverythingSettings,
    crop_boxes,
    near_crop_edge,
    point_grid,
    remove_small_regions,
    stability_bounds,
    stability_score,
)
from samkit.predict.transforms import support_blocks, upsample_operators

# ------------------------------------------------------------------------------------------- pieces


def test_point_grid_cell_centres():
    g = point_grid(2)
    assert g.tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    assert point_grid(32).shape == (1024, 2)


def test_crop_boxes_by_hand():
    boxes, layers = crop_boxes(100, 200, 1, 0.2)
    # layer 1: overlap = int(0.2 * 100 * 2 / 2) = 20; crop_w = ceil((20 + 200) / 2) = 110, crop_h = 60
    assert boxes == [[0, 0, 200, 100], [0, 0, 110, 60], [90, 0, 200, 60], [0, 40, 110, 100], [90, 40, 200, 100]]
    assert layers == [0, 1, 1, 1, 1]
    assert len(crop_boxes(100, 200, 2, 0.2)[0]) == 1 + 4 + 16


def test_stability_score_by_hand():
    logits = torch.tensor([[[2.0, 0.5], [-0.5, -2.0]], [[-3.0, -3.0], [-3.0, -3.0]]])
    # offset 1: > 1 -> 1 pixel, > -1 -> 3 pixels; the second map is empty at both thresholds
    assert stability_score(logits, 0.0, 1.0).tolist() == [1 / 3, 0.0]


def test_near_crop_edge_ignores_image_edges():
    crop = [0, 0, 110, 60]  # top-left crop of a 200 x 100 image
    boxes = torch.tensor([[0.0, 0, 50, 30],    # touches the image's left/top edges only: kept
                          [10, 10, 100, 30],   # right side within 20 px of the crop's inner edge x=110
                          [10, 10, 50, 45]])   # bottom within 20 px of the inner edge y=60
    assert near_crop_edge(boxes, crop, 200, 100).tolist() == [False, True, True]
    assert near_crop_edge(torch.tensor([[10.0, 10, 190, 90]]), [0, 0, 200, 100], 200, 100).tolist() == [False]


def test_remove_small_regions_holes_and_islands():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[5:7, 5:7] = False  # 4-px hole
    mask[16:18, 16:18] = True  # 4-px island
    filled, changed = remove_small_regions(mask, 10, "holes")
    assert changed and filled[5:7, 5:7].all() and filled[16:18, 16:18].all()
    cleaned, changed = remove_small_regions(filled, 10, "islands")
    assert changed and not cleaned[16:18, 16:18].any() and cleaned.sum() == 100
    same, changed = remove_small_regions(cleaned, 10, "islands")
    assert not changed and same is cleaned
    only_small = np.zeros((20, 20), bool)
    only_small[1, 1] = only_small[10:12, 10:12] = True
    kept, _ = remove_small_regions(only_small, 10, "islands")  # all small: the largest stays
    assert kept.sum() == 4 and kept[10:12, 10:12].all()


# ------------------------------------------------------------------------------- scripted generator


class ScriptedModel(nn.Module):
    """Stands in for a SAM: 64x64 input frame (no resize for a 64x64 image), 16x16 low-res logits.

    For a point in the left half it returns (1) the point's 16 x 16 px block (stable), predicted IoU
    0.95; (2) the block's top 12 rows, IoU 0.9: a near-duplicate (box IoU 0.73) that NMS removes;
    (3) a gentle slope (unstable: stability 0), IoU 0.99. Points in the right half get IoU 0.5 only.
    """

    img_size = 64
    mask_threshold = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 1, 4, 4)

    def decode(self, features, points=None, boxes=None, mask_input=None, multimask_output=True):
        xy = points[0][:, 0]  # (B,2) in the 64 frame
        n = xy.shape[0]
        yy, xx = torch.meshgrid(torch.arange(16.0) * 4 + 1.5, torch.arange(16.0) * 4 + 1.5, indexing="ij")
        low = torch.empty(n, 3, 16, 16)
        iou = torch.empty(n, 3)
        for i, (x, y) in enumerate(xy.tolist()):
            cx, cy = (x // 16) * 16 + 8, (y // 16) * 16 + 8  # centre of the point's 16 px cell
            dist = torch.maximum((xx - cx).abs(), (yy - cy).abs())
            low[i, 0] = torch.where(dist < 8, 20.0, -20.0)
            low[i, 1] = torch.where((dist < 8) & (yy < cy + 4), 20.0, -20.0)
            low[i, 2] = 0.5 - dist / 40  # gentle slope: many pixels between -1 and +1
            iou[i] = torch.tensor([0.95, 0.9, 0.99]) if x < 32 else torch.tensor([0.5, 0.5, 0.5])
        return low, iou


def test_generator_filters_dedups_and_describes_masks():
    gen = AutomaticMaskGenerator(ScriptedModel(), points_per_side=4, output_mode="coco_rle")
    records = gen.generate(np.zeros((64, 64, 3), np.uint8))
    # 16 points; right half: predicted IoU 0.5 < 0.88; left half (8 points): the slope fails stability,
    # the 12-row duplicate loses NMS to the block: one 16 x 16 block per left-half point.
    areas = sorted(r["area"] for r in records)
    for r in records:
        m = mask_utils.decode(r["segmentation"])
        assert m.shape == (64, 64) and m.sum() == r["area"]
        x, y, w, h = r["bbox"]
        assert r["predicted_iou"] > 0.88 and r["stability_score"] >= 0.95
        assert r["point_coords"][0][0] < 32 and r["crop_box"] == [0.0, 0.0, 64.0, 64.0]
        ys, xs = np.nonzero(m)
        assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    # bilinear upsampling rounds off each inner block corner by one pixel
    assert len(records) == 8 and all(252 <= a <= 256 for a in areas)
    assert sorted((r["bbox"][0], r["bbox"][1]) for r in records) == [(x, y) for x in (0, 16) for y in (0, 16, 32, 48)]
    assert all(r["bbox"][2:] == [16.0, 16.0] for r in records)
    assert records == sorted(records, key=lambda r: -r["area"])
    assert set(gen.timings) == {"encoder", "decoder", "postprocess"}


@pytest.mark.parametrize("prefilter", [True, False])
def test_filtered_counts_say_where_every_candidate_went(prefilter):
    gen = AutomaticMaskGenerator(ScriptedModel(), points_per_side=4, output_mode="coco_rle",
                                 stability_prefilter=prefilter)
    records = gen.generate(np.zeros((64, 64, 3), np.uint8))
    # 16 points x 3 masks; right half: IoU 0.5; left half: the slope is unstable, the 12-row mask a duplicate
    assert gen.filtered == {"candidates": 48, "pred_iou": 24, "stability": 8, "crop_edge": 0, "duplicate": 8,
                            "small_region": 0}
    assert gen.filtered["candidates"] - sum(gen.filtered[k] for k in FILTERS) == len(records) == 8


def test_settings_thresholds_come_from_the_model_else_sam():
    model = ScriptedModel()
    sam = EverythingSettings().resolve(model)
    assert (sam.pred_iou_thresh, sam.stability_score_thresh, sam.stability_score_offset) == (0.88, 0.95, 1.0)
    model.recommended_amg = {"amg_pred_iou_thresh": 0.4, "amg_stability_score_thresh": 0.7}
    rec = EverythingSettings().resolve(model)
    assert (rec.pred_iou_thresh, rec.stability_score_thresh, rec.stability_score_offset) == (0.4, 0.7, 1.0)
    assert EverythingSettings(pred_iou_thresh=0.6).resolve(model).pred_iou_thresh == 0.6  # given wins
    gen = AutomaticMaskGenerator(model, points_per_side=4, output_mode="coco_rle")
    assert gen.pred_iou_thresh == 0.4 and gen.stability_score_thresh == 0.7
    gen.generate(np.zeros((64, 64, 3), np.uint8))
    assert gen.filtered["pred_iou"] == 0  # the right half's IoU 0.5 now passes the model's 0.4
    assert set(EverythingSettings().kwargs()) == set(EverythingSettings.names())
    assert EverythingSettings().resolve(model).crop_n_layers == 0  # no recommendation: SAM's whole image
    model.recommended_amg["amg_crop_n_layers"] = 1.0
    assert EverythingSettings().resolve(model).crop_n_layers == 1
    assert EverythingSettings(crop_n_layers=0).resolve(model).crop_n_layers == 0  # given wins
    gen = AutomaticMaskGenerator(model, points_per_side=4)
    assert gen.crop_n_layers == 1 and gen.crop_n_points_downscale_factor == 1
    assert [len(g) for g in gen.point_grids] == [16, 16]
    model.recommended_amg["amg_crop_n_points_downscale_factor"] = 2.0
    gen = AutomaticMaskGenerator(model, points_per_side=4)
    assert gen.crop_n_points_downscale_factor == 2 and [len(g) for g in gen.point_grids] == [16, 4]
    assert AutomaticMaskGenerator(model, points_per_side=4, crop_n_points_downscale_factor=1
                                  ).crop_n_points_downscale_factor == 1  # given wins
    # explicit point grids say how many layers there are: one grid, the whole image only
    assert AutomaticMaskGenerator(model, points_per_side=None, point_grids=[point_grid(4)]).crop_n_layers == 0
    with pytest.raises(ValueError, match="points_per_side"):
        EverythingSettings(points_per_side=0)


def test_output_modes_hold_the_same_masks():
    image = np.zeros((64, 64, 3), np.uint8)
    by_mode = {mode: AutomaticMaskGenerator(ScriptedModel(), points_per_side=4, output_mode=mode).generate(image)
               for mode in ("binary_mask", "uncompressed_rle", "coco_rle")}
    for binary, raw, coco in zip(*by_mode.values(), strict=True):
        assert binary["segmentation"].dtype == bool and binary["segmentation"].shape == (64, 64)
        assert isinstance(raw["segmentation"]["counts"], list) and isinstance(coco["segmentation"]["counts"], str)
        from_raw = mask_utils.decode(mask_utils.frPyObjects(raw["segmentation"], 64, 64)).astype(bool)
        from_coco = mask_utils.decode({"size": [64, 64], "counts": coco["segmentation"]["counts"].encode()})
        assert np.array_equal(binary["segmentation"], from_raw) and np.array_equal(from_raw, from_coco.astype(bool))


def test_crops_give_image_frame_masks_without_duplicates():
    gen = AutomaticMaskGenerator(ScriptedModel(), points_per_side=4, crop_n_layers=1, output_mode="binary_mask")
    records = gen.generate(np.zeros((64, 64, 3), np.uint8))
    assert records
    crops = {tuple(r["crop_box"]) for r in records}
    assert (0.0, 0.0, 64.0, 64.0) in crops and len(crops) > 1  # masks from the whole image and from crops
    for r in records:
        x, y, w, h = r["crop_box"]
        ys, xs = np.nonzero(r["segmentation"])
        assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h
        px, py = r["point_coords"][0]
        assert x <= px <= x + w and y <= py <= y + h
    boxes = torch.tensor([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2] - 1, r["bbox"][1] + r["bbox"][3] - 1]
                          for r in records])
    from samkit.predict.boxes import box_iou
    iou = box_iou(boxes, boxes) - torch.eye(len(records), dtype=torch.float64)
    assert float(iou.max()) <= 0.7


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="exactly one"):
        AutomaticMaskGenerator(ScriptedModel(), points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        AutomaticMaskGenerator(ScriptedModel(), output_mode="png")
    with pytest.raises(ValueError, match="one grid per crop layer"):
        AutomaticMaskGenerator(ScriptedModel(), points_per_side=None, point_grids=[point_grid(4)], crop_n_layers=1)
    for bad, name in [({"points_per_side": 0}, "points_per_side"), ({"crop_n_layers": -1}, "crop_n_layers"),
                      ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor"),
                      ({"min_mask_region_area": -1}, "min_mask_region_area")]:
        with pytest.raises(ValueError, match=name):
            AutomaticMaskGenerator(ScriptedModel(), **bad)


# ------------------------------------------------------------- stability bounds (exact shortcut), real data

RELAXED = {"pred_iou_thresh": 0.25, "stability_score_thresh": 0.5, "stability_score_offset": 0.25,
           "box_nms_thresh": 0.9, "crop_n_layers": 0}


@pytest.fixture(scope="module")
def tiny_low_res(data_dir):
    """samkit_tiny's low-res logits for a 12 x 12 grid on a real photo, with the predictor that made them."""
    from samkit.predict.predictor import Predictor
    from samkit.predict.transforms import scale_coords

    pred = Predictor(samkit.load_model("samkit_tiny"))
    pred.set_image(data_dir / "GrabCut" / "data_GT" / "124080.jpg")
    pts = point_grid(12) * np.array(pred.original_size[::-1])
    coords = torch.from_numpy(scale_coords(pts, pred.original_size, pred.model.img_size)).float()
    low, _ = pred.decode_low_res((coords[:, None], torch.ones(len(pts), 1, dtype=torch.long)), multimask=True)
    return pred, low.flatten(0, 1)


def test_support_blocks_cover_what_each_pixel_reads(tiny_low_res):

    pred, low = tiny_low_res
    for size, inp, s in ((pred.original_size, pred.input_size, low.shape[-1]), ((480, 640), (768, 1024), 256),
                         ((37, 1500), (25, 1024), 256)):  # strong down- and up-sampling too
        blocks = support_blocks(tuple(size), tuple(inp), s, 1024 if s == 256 else pred.model.img_size)
        ops = upsample_operators(tuple(size), tuple(inp), s, 1024 if s == 256 else pred.model.img_size)
        for op, windows, counts, span in ((ops[0], blocks.rows, blocks.row_counts, blocks.row_span),
                                          (ops[1], blocks.cols, blocks.col_counts, blocks.col_span)):
            assert int(counts.sum()) == op.shape[0] and (counts > 0).all()
            owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
            for y in range(op.shape[0]):
                reads = set(op[y].nonzero().flatten().tolist())
                assert reads <= set(windows[owner[y]].tolist())
                assert (min(reads), max(reads)) == tuple(span[y])


@pytest.mark.slow
def test_stability_bounds_hold_on_real_logits(tiny_low_res):
    pred, low = tiny_low_res
    blocks = support_blocks(pred.original_size, pred.input_size, low.shape[-1], pred.model.img_size)
    drops = []
    for offset in (0.1, 0.25, 1.0):
        bound, windows = stability_bounds(low, blocks, 0.0, offset)
        full = pred.upscale(low)
        exact = stability_score(full, 0.0, offset)
        assert (bound >= exact - 1e-12).all()
        dropped = int((bound < 0.7).sum())
        assert dropped <= int((exact < 0.7).sum())  # only failing masks are dropped unseen (bound >= exact)
        drops.append(dropped)
        for k in range(len(low)):
            y0, y1, x0, x1 = windows[k].tolist()
            outside = full[k].clone()
            outside[y0:y1, x0:x1] = -1e9
            assert float(outside.max()) <= -offset  # nothing outside the window passes any threshold
    assert max(drops) > 0 and min(drops) < len(low), drops  # the shortcut works and keeps candidates


@pytest.mark.slow
def test_stability_prefilter_changes_nothing(data_dir):
    model = samkit.load_model("samkit_tiny")
    image = data_dir / "GrabCut" / "data_GT" / "124080.jpg"
    runs = [AutomaticMaskGenerator(model, points_per_side=16, output_mode="coco_rle", stability_prefilter=on,
                                   **RELAXED).generate(image) for on in (True, False)]
    assert len(runs[0]) > 10
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_default_model_with_default_settings_finds_objects(data_dir):
    """The bundled model's recommended settings (its file's metadata: thresholds and crop layers) keep
    5-60 masks (issue 15's range) with no flag set."""
    model = samkit.load_model("samkit_tiny")
    assert model.recommended_amg  # fitted on validation data when the model was calibrated
    image = open_dataset("grabcut", data_dir / "GrabCut")[0].image
    generator = AutomaticMaskGenerator(model)
    assert generator.crop_n_layers == model.recommended_amg["amg_crop_n_layers"]
    records = generator.generate(image)
    assert 5 <= len(records) <= 60
    assert all(r["area"] > 0 for r in records)
    if generator.crop_n_layers:
        assert len({tuple(r["crop_box"]) for r in records}) > 1  # masks found in the zoomed-in crops too
