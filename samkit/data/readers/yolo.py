"""YOLO-seg: ``images/.../<stem>.jpg`` + ``labels/.../<stem>.txt`` (normalised polygons)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from samkit.data.readers.base import (
    IMAGE_EXTENSIONS,
    DatasetError,
    DatasetReader,
    fail,
    index_files,
    load_rgb,
    register_dataset,
    stack_masks,
)
from samkit.data.readers.coco import polygons_to_mask
from samkit.data.sample import Sample


class YoloSegDataset(DatasetReader):
    """YOLO-seg: ``<image_dir>/<stem>.jpg`` + ``<label_dir>/<stem>.txt``, one instance a line:
    ``<class> x1 y1 x2 y2 ...`` normalised to [0, 1].

    ``label_dir`` defaults to ``image_dir`` with its last ``images`` part replaced by ``labels``
    (the Ultralytics rule). An image without a label file is a background image: masks (0, H, W)
    (its name is listed in ``unlabelled``); a label without an image is skipped. Samples: masks
    (N, H, W), ``categories`` (N,) the class ids; a malformed line skips the whole image.
    """

    kind = "YOLO-seg"
    layout = "images/<stem>.jpg + labels/<stem>.txt"

    def __init__(self, image_dir: str | Path, label_dir: str | Path | None = None) -> None:
        super().__init__(image_dir)
        self.label_dir = Path(label_dir) if label_dir is not None else _yolo_label_dir(self.root)
        if not self.root.is_dir():
            raise DatasetError(f"YOLO image folder not found: {self.root}")
        if not self.label_dir.is_dir():
            raise DatasetError(f"YOLO label folder not found: {self.label_dir} (images in {self.root})")
        images, image_clashes = index_files(self.root, IMAGE_EXTENSIONS)
        labels, label_clashes = index_files(self.label_dir, {".txt"})
        for path, reason in image_clashes + label_clashes:
            self._skip(path, reason)
        for stem, image_path in sorted(images.items()):
            self._items.append((stem, (image_path, labels.get(stem))))
        for stem, label_path in sorted(labels.items()):
            if stem not in images:
                self._skip(label_path, f"no image {self.root / stem}.* for this label file")
        self.unlabelled = [name for name, (_, label) in self._items if label is None]
        self._require_items()

    def _load(self, name: str, item: tuple[Path, Path | None]) -> Sample:
        image_path, label_path = item
        image = load_rgb(image_path)
        height, width = image.shape[:2]
        instances = _read_yolo_labels(label_path) if label_path is not None else []
        scale = np.array([width, height], dtype=np.float64)
        masks = [polygons_to_mask([(points * scale).ravel()], height, width) for _, points in instances]
        return Sample(name, image, stack_masks(masks, height, width), None, source=str(image_path),
                      categories=[cls for cls, _ in instances],
                      extra={"label_path": str(label_path) if label_path else None})


def _yolo_label_dir(image_dir: Path) -> Path:
    """Ultralytics rule: the last ``images`` folder in the path becomes ``labels``."""
    parts = list(image_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    raise DatasetError(f"cannot derive the label folder from {image_dir} (no 'images' in the path): "
                       "pass label_dir")


def _read_yolo_labels(path: Path) -> list[tuple[int, np.ndarray]]:
    """``(class id, (K, 2) normalised xy)`` per non-empty line of a YOLO-seg label file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        fail(path, f"cannot read label file: {exc}")
    instances = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            cls, coords = int(tokens[0]), np.asarray(tokens[1:], dtype=np.float64)
        except ValueError:
            fail(path, f"line {number}: not '<class> x1 y1 x2 y2 ...' numbers")
        if coords.size < 6 or coords.size % 2 or cls < 0:
            fail(path, f"line {number}: need a class id >= 0 and at least 3 x,y points, got {len(tokens)} values")
        if not np.isfinite(coords).all() or coords.min() < -0.01 or coords.max() > 1.01:
            fail(path, f"line {number}: coordinates must be normalised to [0, 1]")
        instances.append((cls, coords.reshape(-1, 2)))
    return instances


@register_dataset("yolo")
def open_yolo(root: Path, split: str | None = None, label_dir: str | Path | None = None) -> YoloSegDataset:
    """``root`` is an image folder, or a dataset folder with ``images/[<split>/]`` and ``labels/``."""
    if (root / "images").is_dir():
        root = root / "images"
        if split is not None:
            root = root / split
        else:
            subdirs = [p for p in sorted(root.iterdir()) if p.is_dir()]
            has_images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir())
            if not has_images and len(subdirs) == 1:
                root = subdirs[0]
            elif not has_images:
                splits = ", ".join(p.name for p in subdirs)
                raise DatasetError(f"{root} holds several splits ({splits}): pass split=")
    elif split is not None:
        raise DatasetError(f"{root} does not look like a YOLO dataset folder: missing images/")
    return YoloSegDataset(root, label_dir)

