"""RITM's interactive-segmentation benchmarks, one object per image: GrabCut, Berkeley, DAVIS.

* ``GrabCutDataset``  ``data_GT/<name>.<img>`` + ``boundary_GT/<name>.bmp`` (>128 object, 128 ignore)
* ``BerkeleyDataset`` ``images/<name>.jpg`` + ``masks/<name>.png`` (>0 object)
* ``DavisDataset``    ``img/<name>.jpg`` + ``gt/<name>.png`` (>0 object)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np

from samkit.data.readers.base import (
    IMAGE_EXTENSIONS,
    DatasetReader,
    check_size,
    fail,
    index_files,
    load_rgb,
    read_label_map,
    register_dataset,
)
from samkit.data.sample import Sample


class _ImageMaskFolder(DatasetReader):
    """One object per image: ``<root>/<image_dir>/<name>.*`` + ``<root>/<mask_dir>/<name>.*``.

    Each mask file is one sample (named by the mask stem); images without a mask and masks
    without an image are skipped at construction.
    """

    image_dir: ClassVar[str]
    mask_dir: ClassVar[str]

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        image_dir, mask_dir = self._require_dir(self.image_dir), self._require_dir(self.mask_dir)
        images, image_clashes = index_files(image_dir, IMAGE_EXTENSIONS)
        masks, mask_clashes = index_files(mask_dir, IMAGE_EXTENSIONS)
        for path, reason in image_clashes + mask_clashes:
            self._skip(path, reason)
        used: set[Path] = set()
        for stem, mask_path in sorted(masks.items()):
            image_path = self._image_for(stem, images)
            if image_path is None:
                self._skip(mask_path, f"no image {image_dir / stem}.* for this mask")
                continue
            used.add(image_path)
            self._items.append((stem, (image_path, mask_path)))
        for stem, image_path in sorted(images.items()):
            if image_path not in used:
                self._skip(image_path, f"no mask {mask_dir / stem}.* for this image")
        self._require_items()

    def _image_for(self, mask_stem: str, images: dict[str, Path]) -> Path | None:
        return images.get(mask_stem)

    def _decode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Label values (H, W) -> (object mask (H, W) bool, ignore (H, W) bool or None)."""
        return values > 0, None

    def _load(self, name: str, item: tuple[Path, Path]) -> Sample:
        image_path, mask_path = item
        image = load_rgb(image_path)
        values = read_label_map(mask_path)
        check_size(values, image, mask_path, "mask")
        mask, ignore = self._decode(values)
        if not mask.any():
            fail(mask_path, "mask has no object pixels")
        return Sample(name, image, mask[None], ignore, source=str(image_path),
                      extra={"mask_path": str(mask_path)})


@register_dataset("grabcut")
class GrabCutDataset(_ImageMaskFolder):
    """GrabCut (50 images): ``data_GT/<name>.{jpg,bmp,JPG}`` + ``boundary_GT/<name>.bmp``.

    Mask values: >128 object (255), ==128 the unlabelled band -> ``ignore``, else background
    (RITM's rule). Samples: masks (1, H, W), ignore (H, W) bool.
    """

    kind = "GrabCut"
    layout = "data_GT/<name>.{jpg,bmp,...} + boundary_GT/<name>.bmp"
    image_dir = "data_GT"
    mask_dir = "boundary_GT"

    def _decode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return values > 128, values == 128


@register_dataset("berkeley")
class BerkeleyDataset(_ImageMaskFolder):
    """Berkeley (100 masks on 96 BSDS photos): ``images/<name>.jpg`` + ``masks/<name>.png``, >0 object.

    Names are BSDS ids; extra objects of one photo carry a letter (``189011a``, ``189011b``).
    Their image is ``images/189011a.jpg`` when present (RITM's zip ships such copies), else
    ``images/189011.jpg``. Samples: masks (1, H, W), ignore None.
    """

    kind = "Berkeley"
    layout = "images/<name>.jpg + masks/<name>.png"
    image_dir = "images"
    mask_dir = "masks"

    def _image_for(self, mask_stem: str, images: dict[str, Path]) -> Path | None:
        return images.get(mask_stem) or images.get(strip_object_suffix(mask_stem))


@register_dataset("davis")
class DavisDataset(_ImageMaskFolder):
    """DAVIS as RITM packs it (345 frames): ``img/<name>.jpg`` + ``gt/<name>.png``, >0 object.

    Palette PNGs are read by index (all objects merged). Samples: masks (1, H, W), ignore None.
    """

    kind = "DAVIS"
    layout = "img/<name>.jpg + gt/<name>.png"
    image_dir = "img"
    mask_dir = "gt"


def strip_object_suffix(stem: str) -> str:
    """``189011a`` -> ``189011`` (Berkeley's extra-object naming); other stems unchanged."""
    return re.sub(r"(?<=\d)[a-z]$", "", stem)

