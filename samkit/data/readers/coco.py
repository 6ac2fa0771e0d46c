"""COCO instances JSON (polygons, RLE) and the COCO segmentation decoders the other readers share."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from samkit.data.masks import rle_to_mask
from samkit.data.readers.base import (
    READ_ERRORS,
    DatasetError,
    DatasetReader,
    fail,
    load_rgb,
    read_json,
    register_dataset,
    stack_masks,
)
from samkit.data.sample import Sample


def polygons_to_mask(polygons: Sequence[Sequence[float] | np.ndarray], height: int, width: int) -> np.ndarray:
    """COCO polygons (flat ``[x0, y0, x1, y1, ...]`` pixel lists, one object) -> (H, W) bool.

    Rasterised with pycocotools (the COCO convention). Polygons with fewer than 3 points carry
    no area and are ignored (pycocotools would read a 4-number list as a box).
    """
    valid = []
    for polygon in polygons:
        if len(polygon) % 2:
            raise ValueError(f"polygon has an odd number of coordinates ({len(polygon)})")
        if len(polygon) >= 6:
            valid.append([float(v) for v in polygon])
    if not valid:
        return np.zeros((height, width), dtype=bool)
    rle = mask_utils.merge(mask_utils.frPyObjects(valid, height, width))
    return mask_utils.decode(rle).astype(bool)



class CocoDataset(DatasetReader):
    """COCO instances JSON: polygons, compressed and uncompressed RLE (rasterised by pycocotools).

    One sample per image record (named by the file stem), images at ``image_dir / file_name``
    (default: the JSON's folder). ``iscrowd=1`` annotations are OR-ed into ``ignore`` (None when
    there are none); the others become masks (N, H, W) with ``categories`` (N,) COCO category
    ids and ``extra["annotation_ids"]``. ``category_names`` maps category id -> name.
    """

    kind = "COCO"
    layout = "an instances JSON with images/annotations/categories"

    def __init__(self, annotation_json: str | Path, image_dir: str | Path | None = None) -> None:
        annotation_json = Path(annotation_json)
        super().__init__(image_dir if image_dir is not None else annotation_json.parent)
        self.annotation_json = annotation_json
        if not annotation_json.is_file():
            raise DatasetError(f"COCO annotation file not found: {annotation_json}")
        data = self._guard(lambda: read_json(annotation_json))
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetError(f"{annotation_json} does not look like a COCO instances file: no 'images' list")
        categories = data.get("categories", [])
        self.category_names: dict[int, str] = {c["id"]: c.get("name", str(c["id"])) for c in categories}
        self._index(data["images"], data.get("annotations", []))
        self._require_items()

    def _index(self, images: list[dict], annotations: list[dict]) -> None:
        by_image: dict[Any, list[dict]] = defaultdict(list)
        for ann in annotations:
            by_image[ann.get("image_id")].append(ann)
        known = {record.get("id") for record in images}
        for image_id in sorted(set(by_image) - known, key=str):
            self._skip(f"{self.annotation_json} (image_id {image_id})",
                       f"{len(by_image[image_id])} annotation(s) refer to an image id with no image record")
        for record in sorted(images, key=lambda r: str(r.get("file_name"))):
            path = self.root / str(record.get("file_name"))
            if not path.is_file():
                self._skip(path, f"image file not found (image id {record.get('id')})")
                continue
            self._items.append((path.stem, (path, record, by_image.get(record.get("id"), []))))

    def _load(self, name: str, item: tuple[Path, dict, list[dict]]) -> Sample:
        path, record, annotations = item
        image = load_rgb(path)
        height, width = image.shape[:2]
        if (record.get("height", height), record.get("width", width)) != (height, width):
            fail(path, f"image is {width}x{height} but {self.annotation_json.name} says "
                        f"{record.get('width')}x{record.get('height')}")
        masks, categories, ids = [], [], []
        ignore = None
        for ann in annotations:
            mask = self._mask(ann, height, width)
            if ann.get("iscrowd", 0):
                ignore = mask if ignore is None else ignore | mask
            else:
                masks.append(mask)
                categories.append(int(ann.get("category_id", -1)))
                ids.append(ann.get("id"))
        return Sample(name, image, stack_masks(masks, height, width), ignore, source=str(path),
                      categories=categories, extra={"image_id": record.get("id"), "annotation_ids": ids})

    def _mask(self, ann: dict, height: int, width: int) -> np.ndarray:
        where = f"{self.annotation_json} (annotation id {ann.get('id')})"
        try:
            return segmentation_to_mask(ann["segmentation"], height, width)
        except READ_ERRORS as exc:
            fail(where, f"bad segmentation: {type(exc).__name__}: {exc}")


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO ``segmentation`` (polygon list, RLE with str/bytes or list counts) -> (H, W) bool."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        if [int(s) for s in segmentation["size"]] != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} is not the image's [{height}, {width}]")
        return rle_to_mask(segmentation)
    raise TypeError(f"segmentation must be a polygon list or an RLE dict, got {type(segmentation).__name__}")


@register_dataset("coco")
def open_coco(root: Path, image_dir: str | Path | None = None) -> CocoDataset:
    """``root`` is the annotation JSON, or a folder holding exactly one ``*.json``."""
    if root.is_dir():
        candidates = sorted(root.glob("*.json"))
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise DatasetError(f"{root} does not look like a COCO folder: need exactly one *.json "
                               f"annotation file (found {found}); pass the JSON path")
        root = candidates[0]
    return CocoDataset(root, image_dir)

