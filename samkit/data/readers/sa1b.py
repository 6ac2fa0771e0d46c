"""SA-1B: ``<stem>.jpg`` + ``<stem>.json`` (per-image annotation files with RLE masks)."""
from __future__ import annotations

from pathlib import Path

from samkit.data.readers.base import (
    IMAGE_EXTENSIONS,
    READ_ERRORS,
    DatasetReader,
    fail,
    index_files,
    load_rgb,
    read_json,
    register_dataset,
    stack_masks,
)
from samkit.data.readers.coco import segmentation_to_mask
from samkit.data.sample import Sample


@register_dataset("sa1b")
class Sa1bDataset(DatasetReader):
    """SA-1B: ``<stem>.jpg`` + ``<stem>.json`` side by side, JSON ``{"image": {...}, "annotations":
    [{"segmentation": RLE, ...}]}``. Samples: masks (N, H, W), ``extra["annotations"]`` the
    per-mask metadata (id, bbox, area, predicted_iou, stability_score, ...), ``extra["image_info"]``.
    """

    kind = "SA-1B"
    layout = "<stem>.jpg + <stem>.json per image"

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder)
        self._require_dir(".")
        images, image_clashes = index_files(self.root, IMAGE_EXTENSIONS)
        annotations, json_clashes = index_files(self.root, {".json"})
        for path, reason in image_clashes + json_clashes:
            self._skip(path, reason)
        for stem, json_path in sorted(annotations.items()):
            if stem in images:
                self._items.append((stem, (images[stem], json_path)))
            else:
                self._skip(json_path, f"no image {self.root / stem}.* for this annotation file")
        for stem, image_path in sorted(images.items()):
            if stem not in annotations:
                self._skip(image_path, f"no annotation file {self.root / stem}.json for this image")
        self._require_items()

    def _load(self, name: str, item: tuple[Path, Path]) -> Sample:
        image_path, json_path = item
        data = read_json(json_path)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            fail(json_path, "not an SA-1B annotation file: no 'annotations' list")
        image = load_rgb(image_path)
        height, width = image.shape[:2]
        try:
            masks = [segmentation_to_mask(a["segmentation"], height, width) for a in data["annotations"]]
        except READ_ERRORS as exc:
            fail(json_path, f"bad segmentation: {type(exc).__name__}: {exc}")
        meta = [{k: v for k, v in a.items() if k != "segmentation"} for a in data["annotations"]]
        return Sample(name, image, stack_masks(masks, height, width), None, source=str(image_path),
                      extra={"annotations": meta, "image_info": data.get("image", {}),
                             "json_path": str(json_path)})

