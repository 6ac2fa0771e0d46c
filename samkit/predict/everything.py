"""Segment everything: SAM's automatic mask generator (Kirillov et al. 2023, sec. 7.1 / appendix A).

A grid of single-point prompts over the image (and optionally over overlapping zoomed-in crops);
three masks per point; masks kept when their predicted IoU and stability score pass thresholds and
they do not touch an inner crop edge; duplicates removed by box NMS inside each crop (by predicted
IoU) and across crops (smaller crops first); optionally small holes and islands removed.

Speed and memory: the predicted-IoU filter runs before any upsampling (it needs no mask), and so does
a bound on the stability score computed from the low-res logits (exact decisions: a mask is dropped
early only when its full-resolution score is sure to fail); the survivors are upsampled to the crop's
resolution only inside the window where they can be foreground (``upsample_chunk`` whole masks at a
time when ``stability_prefilter`` is off), and each kept mask is turned into COCO RLE at once. Peak memory is one
chunk of full-resolution logits, whatever
the number of points. Differences from SAM's reference code: ``bbox`` follows the COCO convention
(width = last - first column + 1; SAM's reference omits the + 1).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from samkit.data.image_io import load_image
from samkit.data.masks import encode_rle, mask_to_uncompressed_rle
from samkit.predict.boxes import box_area, masks_to_boxes, nms
from samkit.predict.predictor import Predictor
from samkit.predict.transforms import (
    SupportBlocks,
    scale_coords,
    support_blocks,
    upsample_operators,
)

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
EDGE_TOLERANCE = 20.0  # px: a mask box this close to an inner crop edge is cut by the crop
# SAM's defaults for the three thresholds, used when neither the caller nor the model gives one
SAM_THRESHOLDS = {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95, "stability_score_offset": 1.0}
SAM_CROPS = {"crop_n_layers": 0, "crop_n_points_downscale_factor": 1}  # the same for the crop settings
MULTIMASK_OUTPUTS = 3  # masks per point prompt in multimask mode (every SAM)
FILTERS = ("pred_iou", "stability", "crop_edge", "duplicate", "small_region")  # what removes a candidate


@dataclass(frozen=True)
class EverythingSettings:
    """The settings of :class:`AutomaticMaskGenerator` (the CLI derives one flag per field, with the
    ``help`` in its metadata and the default shown).

    The three thresholds and the two crop settings default to None, meaning: the model's recommendation
    when it has one (``model.recommended_amg``, a dict with keys ``amg_pred_iou_thresh``,
    ``amg_stability_score_thresh``, ``amg_stability_score_offset``, ``amg_crop_n_layers``,
    ``amg_crop_n_points_downscale_factor``), else SAM's default (:data:`SAM_THRESHOLDS`, no crops,
    factor 1); :meth:`resolve` decides.
    """

    points_per_side: int = field(default=32, metadata={"help": "N x N grid of point prompts per crop"})
    points_per_batch: int = field(default=64, metadata={"help": "points decoded at once (memory vs speed)"})
    pred_iou_thresh: float | None = field(default=None, metadata={
        "help": "keep masks whose predicted IoU is above T (default: the model's recommendation, else 0.88)"})
    stability_score_thresh: float | None = field(default=None, metadata={
        "help": "keep masks whose stability score is >= T (default: the model's recommendation, else 0.95)"})
    stability_score_offset: float | None = field(default=None, metadata={
        "help": "logit offset of the stability score (default: the model's recommendation, else 1.0)"})
    box_nms_thresh: float = field(default=0.7,
                                  metadata={"help": "box IoU above which the lower-scored mask is dropped"})
    crop_n_layers: int | None = field(default=None, metadata={
        "help": "layers of zoomed-in crops (0: whole image only; default: the model's recommendation, else 0)"})
    crop_nms_thresh: float = field(default=0.7, metadata={"help": "box NMS threshold across crops"})
    crop_overlap_ratio: float = field(default=512 / 1500, metadata={"help": "overlap of neighbouring crops"})
    crop_n_points_downscale_factor: int | None = field(default=None, metadata={
        "help": "crop layer i gets points-per-side / F**i points per side (default: the model's recommendation, "
        "else 1)"})
    min_mask_region_area: int = field(default=0, metadata={
        "help": "fill holes and drop islands smaller than N pixels (0: off)"})

    def __post_init__(self) -> None:
        factor = self.crop_n_points_downscale_factor
        if self.points_per_side < 1 or self.points_per_batch < 1 or (factor is not None and factor < 1):
            raise ValueError("points_per_side, points_per_batch and crop_n_points_downscale_factor must be >= 1")
        if (self.crop_n_layers or 0) < 0 or self.min_mask_region_area < 0:
            raise ValueError("crop_n_layers and min_mask_region_area must be >= 0")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in fields(cls))

    def resolve(self, model: Any) -> EverythingSettings:
        """These settings with every None threshold and crop setting replaced: the model's
        recommendation (``model.recommended_amg``; ``model`` may be a :class:`Predictor`) if any, else
        SAM's default."""
        model = model.model if isinstance(model, Predictor) else model
        recommended = getattr(model, "recommended_amg", None) or {}
        chosen: dict[str, Any] = {name: float(recommended.get(f"amg_{name}", default))
                                  for name, default in SAM_THRESHOLDS.items() if getattr(self, name) is None}
        for name, default in SAM_CROPS.items():
            if getattr(self, name) is None:
                chosen[name] = int(recommended.get(f"amg_{name}", default))
        return replace(self, **chosen)

    def thresholds(self, model: Any) -> tuple[float, float, float]:
        """(pred_iou_thresh, stability_score_thresh, stability_score_offset) after :meth:`resolve`."""
        s = self.resolve(model)
        pred_iou, stability, offset = s.pred_iou_thresh, s.stability_score_thresh, s.stability_score_offset
        assert pred_iou is not None and stability is not None and offset is not None  # resolve fills them
        return pred_iou, stability, offset

    def kwargs(self) -> dict[str, Any]:
        """The settings as :class:`AutomaticMaskGenerator` keyword arguments."""
        return asdict(self)


# ------------------------------------------------------------------------------------ point grids / crops


def point_grid(n_per_side: int) -> np.ndarray:
    """(n^2, 2) x, y in [0, 1]: centres of an n x n grid of equal cells, row by row."""
    t = (np.arange(n_per_side, dtype=np.float64) + 0.5) / n_per_side
    xs, ys = np.meshgrid(t, t)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer: layer i has ``n_per_side / downscale**i`` points per side."""
    return [point_grid(int(n_per_side / downscale ** i)) for i in range(n_layers + 1)]


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """SAM's crops: layer 0 is the whole image; layer i tiles it into 2^i x 2^i overlapping crops.

    Returns crop boxes [x0, y0, x1, y1] (x1, y1 exclusive) and each crop's layer index.
    """
    boxes, layers = [[0, 0, width, height]], [0]
    short = min(height, width)
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * short * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + width) / n)
        crop_h = math.ceil((overlap * (n - 1) + height) / n)
        for y0 in (int((crop_h - overlap) * i) for i in range(n)):
            for x0 in (int((crop_w - overlap) * i) for i in range(n)):
                boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
                layers.append(layer)
    return boxes, layers


# ---------------------------------------------------------------------------------------- mask scores


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """(..., H, W) logits -> (...,) IoU of the masks ``logits > threshold + offset`` and
    ``logits > threshold - offset`` (the first lies inside the second); 0 when both are empty."""
    inter = (logits > threshold + offset).sum(dim=(-1, -2), dtype=torch.int64)
    union = (logits > threshold - offset).sum(dim=(-1, -2), dtype=torch.int64)
    return torch.where(union > 0, inter.double() / union.clamp_min(1).double(), torch.zeros_like(inter.double()))


def stability_bounds(low: torch.Tensor, blocks: SupportBlocks, threshold: float,
                     offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, s, s) low-res logits -> upper bounds (K,) of :func:`stability_score` of their upsampled
    logits, and windows (K, 4) ``y0, y1, x0, x1`` (full-resolution pixels, end exclusive) outside of
    which every upsampled logit is surely below ``threshold - |offset|``.

    Each full-resolution pixel is a convex combination of the low-res values in its support window
    (see :class:`~samkit.predict.transforms.SupportBlocks`), so the window's min and max bound it:
    counting whole blocks gives at most how many pixels can pass ``threshold + offset`` and at least
    how many must pass ``threshold - offset``. A margin of 1e-5 (relative) covers float rounding in
    the upsampling. A mask whose bound is below the stability threshold can be dropped without being
    upsampled, and the others need upsampling only inside their window: the decisions and scores are
    those of the whole upsampled mask.
    """
    k = low.shape[0]
    if k == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.long)
    x = low.float()
    gathered = x[:, blocks.rows]  # (K, Nr, width, s)
    lo = gathered.amin(dim=2)[:, :, blocks.cols].amin(dim=3)  # (K, Nr, Nc): min over each block's window
    hi = gathered.amax(dim=2)[:, :, blocks.cols].amax(dim=3)
    weight = (blocks.row_counts[:, None] * blocks.col_counts[None, :]).double()  # pixels per block
    margin = 1e-5 * (1.0 + x.abs().flatten(1).amax(dim=1)).view(k, 1, 1)

    def pixels(mask: torch.Tensor) -> torch.Tensor:
        return (mask.double() * weight).sum(dim=(1, 2))

    inter_hi = pixels(hi > threshold + offset - margin)  # pixels that may pass the high threshold
    union_lo = pixels(lo > threshold - offset + margin)  # pixels that surely pass the low one
    support = hi > threshold - abs(offset) - margin  # blocks that may hold a pixel above any threshold
    bound = torch.where(union_lo > 0, (inter_hi / union_lo.clamp_min(1)).clamp_max(1.0), torch.ones(k).double())
    bound = torch.where(support.flatten(1).any(dim=1), bound, torch.zeros_like(bound))  # surely empty: 0

    def pixel_range(any_block: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ends = counts.cumsum(0)
        n = len(counts)
        idx = torch.arange(n)
        first = torch.where(any_block, idx, n).amin(dim=1).clamp_max(n - 1)
        last = torch.where(any_block, idx, -1).amax(dim=1).clamp_min(0)
        start, stop = ends[first] - counts[first], ends[last]
        return start, torch.where(any_block.any(dim=1), stop, start)

    y0, y1 = pixel_range(support.any(dim=2), blocks.row_counts)
    x0, x1 = pixel_range(support.any(dim=1), blocks.col_counts)
    return bound, torch.stack([y0, y1, x0, x1], dim=1)


def near_crop_edge(boxes: torch.Tensor, crop: list[int], width: int, height: int,
                   atol: float = EDGE_TOLERANCE) -> torch.Tensor:
    """(N,4) image-frame boxes -> (N,) bool: a side lies within ``atol`` of a crop edge that is not
    also an image edge (the object probably continues outside the crop)."""
    crop_t = torch.tensor(crop, dtype=torch.float64)
    image_t = torch.tensor([0, 0, width, height], dtype=torch.float64)
    b = boxes.double()
    at_crop = (b - crop_t).abs() <= atol
    at_image = (b - image_t).abs() <= atol
    return (at_crop & ~at_image).any(dim=1)


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``min_area`` px.

    Returns the new (H,W) bool mask and whether it changed. Connectivity 8, as SAM.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    fill = mode == "holes"
    work = ((~mask) if fill else mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    small = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] < min_area]
    if not small:
        return mask, False
    if fill:
        return mask | np.isin(labels, small), True
    keep = [i for i in range(1, n) if i not in set(small)]
    if not keep:  # every island is small: keep the largest, as SAM does
        keep = [1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    return np.isin(labels, keep), True


# ---------------------------------------------------------------------------------------- RLE helpers


def _encode_placed(masks: list[tuple[np.ndarray, int, int]], height: int, width: int) -> list[dict]:
    """(mask transposed (w_i, h_i) bool, top y, left x) in the (height, width) image -> pycocotools RLEs.

    One image-sized frame is reused for every mask (placed, encoded, cleared): memory is one byte per
    image pixel however many masks a chunk keeps. The frame is column-major, as pycocotools reads it, so a
    transposed mask (C-ordered) is placed by contiguous row copies.
    """
    frame = np.zeros((width, height), dtype=np.uint8)  # (x, y): the image column-major
    rles = []
    for mask_t, y, x in masks:
        window = frame[x:x + mask_t.shape[0], y:y + mask_t.shape[1]]
        window[...] = mask_t
        rles.extend(mask_utils.encode(frame.T[:, :, None]))
        window[...] = 0
    return rles


def _rle_to_uncompressed(rle: dict) -> dict:
    """pycocotools RLE -> ``{"size": [H, W], "counts": [int, ...]}`` (runs over the column-major order)."""
    return mask_to_uncompressed_rle(mask_utils.decode(rle))


# ------------------------------------------------------------------------------------------ generator


@dataclass
class _Candidates:
    """Masks kept so far (image frame): RLEs, boxes (K,4), predicted IoU, stability, points (K,2), crop index."""

    rles: list[dict] = field(default_factory=list)
    boxes: list[torch.Tensor] = field(default_factory=list)
    iou: list[torch.Tensor] = field(default_factory=list)
    stability: list[torch.Tensor] = field(default_factory=list)
    points: list[torch.Tensor] = field(default_factory=list)
    crop: list[torch.Tensor] = field(default_factory=list)

    def add(self, rles: list[dict], boxes: torch.Tensor, iou: torch.Tensor, stability: torch.Tensor,
            points: torch.Tensor, crop_index: int) -> None:
        self.rles.extend(rles)
        self.boxes.append(boxes.double())
        self.iou.append(iou.double())
        self.stability.append(stability.double())
        self.points.append(points.double())
        self.crop.append(torch.full((len(rles),), crop_index, dtype=torch.long))

    def cat(self) -> dict[str, torch.Tensor]:
        empty = {"boxes": torch.zeros(0, 4, dtype=torch.float64), "points": torch.zeros(0, 2, dtype=torch.float64)}
        return {k: torch.cat(getattr(self, k)) if getattr(self, k) else empty.get(k, torch.zeros(0))
                for k in ("boxes", "iou", "stability", "points", "crop")}


class AutomaticMaskGenerator:
    """SAM's "segment everything" for one image at a time, with SAM's defaults.

    >>> gen = AutomaticMaskGenerator(samkit.load_model("samkit_tiny"))
    >>> records = gen.generate(rgb)   # list of dicts, largest area first

    Each record: ``segmentation`` ((H,W) bool array, uncompressed or COCO RLE per ``output_mode``),
    ``area``, ``bbox`` [x, y, w, h], ``predicted_iou``, ``point_coords`` [[x, y]],
    ``stability_score``, ``crop_box`` [x, y, w, h]. The three thresholds and the two crop settings left
    None are resolved by :meth:`EverythingSettings.resolve` (explicit ``point_grids`` give the crop
    layers). After :meth:`generate`, ``filtered`` holds the number of ``candidates`` (masks decoded)
    and how many each of :data:`FILTERS` removed.
    """

    def __init__(self, model: Any, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float | None = None, stability_score_thresh: float | None = None,
                 stability_score_offset: float | None = None, box_nms_thresh: float = 0.7,
                 crop_n_layers: int | None = None,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int | None = None, point_grids: list[np.ndarray] | None = None,
                 min_mask_region_area: int = 0, output_mode: str = "binary_mask", upsample_chunk: int = 16,
                 stability_prefilter: bool = True) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1 or upsample_chunk < 1:
            raise ValueError("points_per_batch and upsample_chunk must be >= 1")
        if points_per_side is not None and points_per_side < 1:
            raise ValueError("points_per_side must be >= 1")
        self.predictor = model if isinstance(model, Predictor) else Predictor(model)
        if point_grids is not None and crop_n_layers is None:
            crop_n_layers = len(point_grids) - 1  # the grids say how many layers there are
        settings = EverythingSettings(pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
                                      stability_score_offset=stability_score_offset, crop_n_layers=crop_n_layers,
                                      crop_n_points_downscale_factor=crop_n_points_downscale_factor,
                                      min_mask_region_area=min_mask_region_area,  # checks the crop and area settings
                                      ).resolve(self.predictor.model)
        crop_n_layers, downscale = settings.crop_n_layers, settings.crop_n_points_downscale_factor
        assert crop_n_layers is not None and downscale is not None  # resolve fills them
        if point_grids is not None:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) != crop_n_layers + 1:
                raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}")
            if any(g.ndim != 2 or g.shape[1] != 2 or ((g < 0) | (g > 1)).any() for g in grids):
                raise ValueError("each point grid must be (N, 2) x, y in [0, 1]")
        elif points_per_side is not None:
            grids = layer_point_grids(points_per_side, crop_n_layers, downscale)
        self.point_grids = grids
        self.points_per_batch = points_per_batch
        thresholds = settings.thresholds(self.predictor.model)
        self.pred_iou_thresh, self.stability_score_thresh, self.stability_score_offset = thresholds
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_n_points_downscale_factor = downscale
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.upsample_chunk = upsample_chunk
        self.stability_prefilter = stability_prefilter  # exact shortcut (see stability_bounds)
        self.timings: dict[str, float] = {}
        self.filtered: dict[str, int] = {}  # last image: candidates decoded, and how many each filter removed

    # -- public ------------------------------------------------------------------------------
    def generate(self, image: np.ndarray | Image.Image | str | os.PathLike) -> list[dict]:
        """Masks of everything in ``image`` (HxWx3 uint8 RGB array, PIL image or path), as records
        sorted by area, largest first. ``self.timings`` gets the seconds spent in the image encoder,
        the mask decoder and post-processing."""
        rgb = load_image(image)
        height, width = rgb.shape[:2]
        self.timings = {"encoder": 0.0, "decoder": 0.0, "postprocess": 0.0}
        self.filtered = dict.fromkeys(("candidates", *FILTERS), 0)
        crops, layers = crop_boxes(height, width, self.crop_n_layers, self.crop_overlap_ratio)
        found = _Candidates()
        for index, (crop, layer) in enumerate(zip(crops, layers, strict=False)):
            self._process_crop(rgb, crop, layer, index, found)
        with _timer(self.timings, "postprocess"):
            data = found.cat()
            keep = torch.arange(len(found.rles))
            if len(crops) > 1 and len(keep):
                crop_t = torch.tensor(crops, dtype=torch.float64)[data["crop"]]
                keep = nms(data["boxes"], 1.0 / box_area(crop_t).clamp_min(1), self.crop_nms_thresh)
                self.filtered["duplicate"] += len(found.rles) - len(keep)
            rles = [found.rles[i] for i in keep.tolist()]
            data = {k: v[keep] for k, v in data.items()}
            if self.min_mask_region_area > 0 and rles:
                before = len(rles)
                rles, data = self._clean_small_regions(rles, data)
                self.filtered["small_region"] += before - len(rles)
            records = self._records(rles, data, crops)
        return records

    # -- one crop ----------------------------------------------------------------------------
    def _process_crop(self, rgb: np.ndarray, crop: list[int], layer: int, index: int, found: _Candidates) -> None:
        x0, y0, x1, y1 = crop
        height, width = rgb.shape[:2]
        with _timer(self.timings, "encoder"):
            self.predictor.set_image(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        crop_h, crop_w = y1 - y0, x1 - x0
        points = self.point_grids[layer] * np.array([crop_w, crop_h], dtype=np.float64)
        local = _Candidates()
        for start in range(0, len(points), self.points_per_batch):
            self._process_batch(points[start:start + self.points_per_batch], crop, height, width, index, local)
        with _timer(self.timings, "postprocess"):
            data = local.cat()
            if not local.rles:
                return
            keep = nms(data["boxes"], data["iou"], self.box_nms_thresh)
            self.filtered["duplicate"] += len(local.rles) - len(keep)
            found.add([local.rles[i] for i in keep.tolist()], data["boxes"][keep], data["iou"][keep],
                      data["stability"][keep], data["points"][keep], index)

    def _process_batch(self, points: np.ndarray, crop: list[int], height: int, width: int, index: int,
                       local: _Candidates) -> None:
        """Decode (B,2) crop-frame points (3 masks each), filter, and add survivors to ``local``."""
        pred = self.predictor
        model = pred.model
        blocks = None
        if self.stability_prefilter and self.stability_score_thresh > 0:
            blocks = support_blocks(pred.original_size, pred.input_size, pred.low_res_size(),
                                    model.img_size)
        with _timer(self.timings, "decoder"):
            coords = torch.from_numpy(scale_coords(points, pred._require_image()[1], model.img_size)).float()
            labels = torch.ones(len(points), 1, dtype=torch.long)
            if self.pred_iou_thresh > 0:  # masks below the threshold are not even upscaled to low-res
                # with the windowed stability filter, only the block of logits the upsampling reads
                low, iou, which = pred.decode_confident((coords[:, None], labels), self.pred_iou_thresh,
                                                        image_part=blocks is not None)
                candidates = len(points) * MULTIMASK_OUTPUTS
            else:
                low, iou = pred.decode_low_res((coords[:, None], labels), multimask=True)
                candidates = iou.numel()
                which = torch.ones_like(iou, dtype=torch.bool).nonzero()
                low, iou = low.flatten(0, 1), iou.flatten()
        with _timer(self.timings, "postprocess"), torch.inference_mode():
            pts = torch.from_numpy(points)[which[:, 0]]  # each mask's prompt
            self.filtered["candidates"] += candidates
            self.filtered["pred_iou"] += candidates - len(iou)
            offset = torch.tensor([crop[0], crop[1], crop[0], crop[1]], dtype=torch.float64)
            threshold = model.mask_threshold
            if blocks is not None:
                self._windowed_survivors(low, iou, pts, blocks, crop, offset, height, width, index, local)
                return
            for s in range(0, low.shape[0], self.upsample_chunk):
                logits = pred.upscale(low[s:s + self.upsample_chunk])
                stab = stability_score(logits, threshold, self.stability_score_offset)
                ok = stab >= self.stability_score_thresh if self.stability_score_thresh > 0 else torch.ones_like(
                    stab, dtype=torch.bool)
                masks = logits[ok] > threshold
                boxes = masks_to_boxes(masks).double() + offset
                inside = ~near_crop_edge(boxes, crop, width, height)
                self.filtered["stability"] += int((~ok).sum())
                self.filtered["crop_edge"] += int((~inside).sum())
                sel = ok.nonzero().flatten()[inside]
                placed = [(m.T, crop[1], crop[0]) for m in masks[inside].numpy()]
                local.add(_encode_placed(placed, height, width), boxes[inside], iou[s:s + self.upsample_chunk][sel],
                          stab[sel],
                          pts[s:s + self.upsample_chunk][sel] + offset[:2], index)

    def _windowed_survivors(self, low: torch.Tensor, iou: torch.Tensor, pts: torch.Tensor, blocks: SupportBlocks,
                            crop: list[int], shift: torch.Tensor, height: int, width: int, index: int,
                            local: _Candidates) -> None:
        """The stability filter, boxes and RLEs of (K, s', s'') low-res masks (the whole grid, or the top-left block
        that the upsampling reads: :meth:`Predictor.decode_confident`'s ``image_part``), each upsampled only inside the
        window where it can be foreground (:func:`stability_bounds`), and not at all when its bound fails.

        Same scores, masks and boxes as :func:`stability_score` / :func:`masks_to_boxes` on the whole upsampled
        logits (their arithmetic redone in numpy per window: torch's per-call overhead dominates at this size).
        ``shift`` (4,) moves crop-frame boxes into the image frame.
        """
        pred, model = self.predictor, self.predictor.model
        threshold, offset = model.mask_threshold, self.stability_score_offset
        rows_op, cols_op = upsample_operators(pred.original_size, pred.input_size,
                                              pred.low_res_size(), model.img_size)
        for s in range(0, low.shape[0], 64):
            chunk = low[s:s + 64].float()
            bound, windows = stability_bounds(chunk, blocks, threshold, offset)
            masks, boxes, sel, stabs = [], [], [], []
            self.filtered["stability"] += int((bound < self.stability_score_thresh).sum())
            for j in (bound >= self.stability_score_thresh).nonzero().flatten().tolist():
                y0, y1, x0, x1 = windows[j].tolist()
                r0, r1 = blocks.row_span[y0, 0], blocks.row_span[y1 - 1, 1] + 1  # low-res rows/cols read
                c0, c1 = blocks.col_span[x0, 0], blocks.col_span[x1 - 1, 1] + 1
                # torch's matmul: numpy's BLAS threads would spin against torch's between calls. Transposed
                # (x, y), the layout _encode_placed places without a strided copy
                logits = (cols_op[x0:x1, c0:c1] @ (rows_op[y0:y1, r0:r1] @ chunk[j, r0:r1, c0:c1]).T).numpy()
                union = np.count_nonzero(logits > threshold - offset)
                stab = np.count_nonzero(logits > threshold + offset) / union if union else 0.0
                if stab < self.stability_score_thresh:
                    self.filtered["stability"] += 1
                    continue
                mask = logits > threshold  # (x, y)
                xs, ys = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                masks.append((mask, y0 + crop[1], x0 + crop[0]))
                boxes.append([x0 + xs[0], y0 + ys[0], x0 + xs[-1], y0 + ys[-1]])
                sel.append(s + j)
                stabs.append(stab)
            if not masks:
                continue
            box_t = torch.tensor(boxes, dtype=torch.float64) + shift
            inside = (~near_crop_edge(box_t, crop, width, height)).tolist()
            self.filtered["crop_edge"] += inside.count(False)
            idx = torch.tensor([i for i, ok in zip(sel, inside, strict=False) if ok], dtype=torch.long)
            if len(idx):
                kept = [m for m, ok in zip(masks, inside, strict=False) if ok]
                local.add(_encode_placed(kept, height, width), box_t[inside], iou[idx],
                          torch.tensor(stabs, dtype=torch.float64)[inside], pts[idx] + shift[:2], index)

    # -- post-processing ---------------------------------------------------------------------
    def _clean_small_regions(self, rles: list[dict], data: dict[str, torch.Tensor]
                             ) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """Fill small holes, drop small islands, then NMS preferring the masks that did not change."""
        new_rles, boxes, unchanged = [], [], []
        for i, rle in enumerate(rles):
            mask = mask_utils.decode(rle).astype(bool)
            mask, holes = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, islands = remove_small_regions(mask, self.min_mask_region_area, "islands")
            changed = holes or islands
            new = encode_rle(mask) if changed else rle
            new_rles.append(new)
            boxes.append(masks_to_boxes(torch.from_numpy(mask)) if changed else data["boxes"][i].long())
            unchanged.append(0.0 if changed else 1.0)
        box_t = torch.stack(boxes).double()
        keep = nms(box_t, torch.tensor(unchanged), self.box_nms_thresh)
        data = {**{k: v[keep] for k, v in data.items()}, "boxes": box_t[keep]}
        return [new_rles[i] for i in keep.tolist()], data

    def _records(self, rles: list[dict], data: dict[str, torch.Tensor], crops: list[list[int]]) -> list[dict]:
        records = []
        for i, rle in enumerate(rles):
            x0, y0, x1, y1 = crops[int(data["crop"][i])]
            records.append({
                "segmentation": self._segmentation(rle),
                "area": int(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "predicted_iou": float(data["iou"][i]),
                "point_coords": [[float(v) for v in data["points"][i]]],
                "stability_score": float(data["stability"][i]),
                "crop_box": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            })
        records.sort(key=lambda r: r["area"], reverse=True)
        return records

    def _segmentation(self, rle: dict) -> Any:
        if self.output_mode == "binary_mask":
            return mask_utils.decode(rle).astype(bool)
        if self.output_mode == "uncompressed_rle":
            return _rle_to_uncompressed(rle)
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")}


@contextlib.contextmanager
def _timer(store: dict[str, float], key: str) -> Iterator[None]:
    """Adds the seconds spent in the ``with`` block to ``store[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        store[key] = store.get(key, 0.0) + time.perf_counter() - t0
