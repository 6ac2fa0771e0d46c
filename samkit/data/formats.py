"""Writers for the mask formats samkit reads (:mod:`samkit.data.readers`): SA-1B JSON, COCO JSON
(RLE or polygons), YOLO-seg text, and PNG mask folders. Everything a writer produces reads back
through the matching reader; RLE is exact, polygons are the OpenCV contours of the mask. Also the
``masks.json`` of ``samkit segment`` (:func:`segment_document`), LabelMe JSON and label-map PNGs.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from samkit.data.masks import (
    mask_area,
    mask_bbox_xywh,
    mask_geometry,
    mask_to_rle,
    rle_to_mask,
    save_mask_png,
)
from samkit.io_utils import atomic_path, atomic_write_text

SEGMENTATION_KINDS = ("rle", "polygon")


# ------------------------------------------------------------------------------------------ polygons


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """(H,W) mask -> COCO polygons ``[[x1, y1, x2, y2, ...], ...]``: the outer contours of its
    connected parts (holes are not representable), pixel-centre coordinates, largest part first."""
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= min_points]


# -------------------------------------------------------------------------------------------- SA-1B


def sa1b_document(file_name: str, height: int, width: int, records: Sequence[dict], image_id: int = 0) -> dict:
    """SA-1B per-image JSON from generator records (COCO RLE segmentations, or masks)."""
    annotations = []
    for i, r in enumerate(records):
        seg = r["segmentation"]
        ann = {"id": i, "segmentation": mask_to_rle(seg) if isinstance(seg, np.ndarray) else seg}
        ann.update({k: v for k, v in r.items() if k != "segmentation"})
        annotations.append(ann)
    return {"image": {"image_id": image_id, "file_name": file_name, "height": int(height), "width": int(width)},
            "annotations": annotations}


def write_sa1b(path: str | os.PathLike, file_name: str, height: int, width: int, records: Sequence[dict],
               image_id: int = 0) -> Path:
    """Write :func:`sa1b_document` to ``path`` (atomically)."""
    return atomic_write_text(path, json.dumps(sa1b_document(file_name, height, width, records, image_id)))


# --------------------------------------------------------------------------------------------- COCO


def coco_document(images: Iterable[dict], segmentation: str = "rle",
                  categories: Sequence[dict] | None = None) -> dict:
    """One COCO instances JSON from SA-1B-style per-image documents (``{"image", "annotations"}``).

    Image ids are 1, 2, ... in the given order, annotation ids 1, 2, ... across images; every mask is
    category 1 ("object") unless annotations carry ``category_id``. ``segmentation``: "rle" keeps the
    compressed RLE, "polygon" converts each mask to its outer contours.
    """
    if segmentation not in SEGMENTATION_KINDS:
        raise ValueError(f"segmentation must be one of {SEGMENTATION_KINDS}, got {segmentation!r}")
    out_images: list[dict] = []
    out_anns: list[dict] = []
    for image_id, doc in enumerate(images, start=1):
        info = doc["image"]
        out_images.append({"id": image_id, "file_name": info["file_name"], "height": info["height"],
                           "width": info["width"]})
        for ann in doc["annotations"]:
            seg = ann["segmentation"]
            if segmentation == "polygon":
                seg = mask_to_polygons(rle_to_mask(seg))
            extra = {k: v for k, v in ann.items() if k not in ("id", "segmentation", "category_id")}
            out_anns.append({**extra, "id": len(out_anns) + 1, "image_id": image_id,
                             "category_id": ann.get("category_id", 1), "segmentation": seg, "iscrowd": 0})
    return {"images": out_images, "annotations": out_anns,
            "categories": list(categories) if categories else [{"id": 1, "name": "object"}]}


# ---------------------------------------------------------------------------------------- YOLO-seg


def yolo_seg_lines(masks: Iterable[np.ndarray], class_ids: Iterable[int] | None = None) -> list[str]:
    """One ``<class> x1 y1 x2 y2 ...`` line (coordinates normalised to [0, 1]) per mask: the polygon
    of its largest part. Empty masks give no line."""
    lines = []
    masks = list(masks)
    ids = list(class_ids) if class_ids is not None else [0] * len(masks)
    for mask, cls in zip(masks, ids, strict=False):
        polygons = mask_to_polygons(mask)
        if not polygons:
            continue
        h, w = mask.shape
        xy = np.asarray(polygons[0], dtype=np.float64).reshape(-1, 2) / np.array([w, h])
        lines.append(f"{int(cls)} " + " ".join(f"{v:.6f}" for v in xy.ravel()))
    return lines


def write_yolo_seg(path: str | os.PathLike, masks: Iterable[np.ndarray],
                   class_ids: Iterable[int] | None = None) -> Path:
    """Write :func:`yolo_seg_lines` to ``path``."""
    return atomic_write_text(path, "".join(line + "\n" for line in yolo_seg_lines(masks, class_ids)))


# -------------------------------------------------------------------------------------- PNG folders


def write_png_masks(folder: str | os.PathLike, masks: Iterable[np.ndarray],
                    records: Sequence[dict] | None = None) -> Path:
    """``mask_000.png``, ``mask_001.png``, ... (0 / 255) in ``folder``, plus ``masks.json`` listing each
    file with its area, bbox and the record's scores (when ``records`` are given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for i, mask in enumerate(masks):
        name = f"mask_{i:03d}.png"
        save_mask_png(folder / name, mask)
        entry: dict[str, Any] = {"file": name, "area": mask_area(mask), "bbox": mask_bbox_xywh(mask)}
        if records is not None:
            entry.update({k: v for k, v in records[i].items() if k not in ("segmentation", "area", "bbox")})
        index.append(entry)
    atomic_write_text(folder / "masks.json", json.dumps(index))
    return folder


def read_png_masks(folder: str | os.PathLike) -> np.ndarray:
    """The masks of a :func:`write_png_masks` folder as (N,H,W) bool, in file order (pixel > 127 = mask)."""
    folder = Path(folder)
    files = sorted(folder.glob("mask_*.png"))
    if not files:
        raise FileNotFoundError(f"no mask_*.png files in {folder}")
    return np.stack([np.asarray(Image.open(f).convert("L")) > 127 for f in files])


# ------------------------------------------------------------------------------ samkit segment: masks.json


@dataclass(frozen=True)
class SegmentPrompts:
    """The prompts of one ``samkit segment`` run, in original-image pixels (the ``prompts`` of masks.json)."""

    points: list[tuple[float, float]]
    labels: list[int]
    box: tuple[float, float, float, float] | None = None
    mask_input: str | None = None
    multimask: bool = False
    text: str | None = None
    semantic: bool = False

    def record(self) -> dict:
        """The ``prompts`` entry of masks.json."""
        return {"points": [list(p) for p in self.points], "labels": list(self.labels),
                "box": None if self.box is None else list(self.box), "mask_input": self.mask_input,
                "multimask": self.multimask, "text": self.text, "semantic": self.semantic}


def mask_annotation(index: int, mask: np.ndarray, predicted_iou: float, mask_file: str,
                    logits_file: str | None = None) -> dict:
    """One ``annotations`` entry of masks.json for an (H, W) mask."""
    geometry = mask_geometry(mask)
    ann = {"id": index, "segmentation": geometry["rle"], "bbox": geometry["bbox"], "area": geometry["area"],
           "predicted_iou": float(predicted_iou), "mask_file": mask_file}
    if logits_file is not None:
        ann["logits_file"] = logits_file
    return ann


def segment_document(file_name: str | None, height: int, width: int, model: str, embedding: str | None,
                     prompts: SegmentPrompts, annotations: list[dict]) -> dict:
    """masks.json of ``samkit segment``::

        {"image": {"file_name": "photo.jpg" | null, "height": H, "width": W},
         "model": "mobile_sam",                      # architecture (registry name)
         "embedding": "photo.safetensors" | null,    # --embedding file used instead of the encoder
         "prompts": {"points": [[x, y], ...], "labels": [1, ...], "box": [x0, y0, x1, y1] | null,
                     "mask_input": "prev.png" | null, "multimask": false,
                     "text": "the dog on the left" | null, "semantic": false},
         "annotations": [                            # sorted by predicted IoU, descending
           {"id": 0, "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"},
            "bbox": [x, y, w, h], "area": 1234, "predicted_iou": 0.93, "mask_file": "mask_0.png",
            "logits_file": "logits_0.npy"}]}         # logits_file: only with --save-logits

    Coordinates are original-image pixels; ``box`` is the box given to the model (after clipping).
    """
    return {"image": {"file_name": file_name, "height": int(height), "width": int(width)}, "model": model,
            "embedding": embedding, "prompts": prompts.record(), "annotations": annotations}


# ------------------------------------------------------------------------------- LabelMe and label maps


def labelme_document(file_name: str, height: int, width: int, masks: Iterable[np.ndarray],
                     label: str = "object") -> dict:
    """LabelMe JSON: one polygon shape per connected part of each mask (group_id = the mask's index)."""
    shapes = []
    for i, mask in enumerate(masks):
        for polygon in mask_to_polygons(mask):
            points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2).tolist()
            shapes.append({"label": label, "points": points, "group_id": i, "description": "",
                           "shape_type": "polygon", "flags": {}})
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": file_name, "imageData": None,
            "imageHeight": int(height), "imageWidth": int(width)}


def write_label_map(path: str | os.PathLike, masks: Iterable[np.ndarray], height: int, width: int) -> Path:
    """One 16-bit PNG: 0 background, i + 1 where mask i is (later masks drawn over earlier ones: pass them
    largest first and small objects stay visible). Masks are read one at a time."""
    labels = np.zeros((height, width), dtype=np.uint16)
    for value, mask in enumerate(masks, start=1):
        if value > np.iinfo(np.uint16).max:
            raise ValueError(f"a 16-bit label map holds at most {np.iinfo(np.uint16).max} masks")
        labels[np.asarray(mask, dtype=bool)] = value
    with atomic_path(path) as tmp:
        Image.fromarray(labels).save(tmp, format="PNG")
    return Path(path)
