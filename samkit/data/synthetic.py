"""Synthetic training scenes: object cut-outs pasted on other images, with exact instance masks.

:class:`PasteScenes` is a lazy sequence of :class:`~samkit.data.sample.Sample` s built from any
readers: scene ``i`` depends only on ``(seed, i)``. :func:`open_paste_scenes` is the standard mix
from the shared data folder (``open_dataset("paste", root, length=..., seed=...)``): objects from
coco128-seg + BSDS500 train/val, backgrounds from BSDS500 train/val (both without the GrabCut /
Berkeley evaluation photos).
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from samkit.data.readers.base import DatasetError, DatasetReader, register_dataset
from samkit.data.readers.bsds import BSDS500Dataset
from samkit.data.readers.coco import CocoDataset
from samkit.data.sample import Sample

MIN_OBJECT_AREA = 32 * 32  # px: smaller instance masks are not used as objects
MAX_OBJECT_FRACTION = 0.9  # nor masks covering more than this fraction of their image
FEATHER_ALPHA = 0.5  # blending weight of an object's 1-px mask edge (interior 1, outside 0)
_MAX_DRAWS = 50  # samples tried before giving up on finding a usable image / object
_MAX_PLACEMENTS = 10  # positions tried per object for enough of it inside the frame

T = TypeVar("T")


@dataclass
class Cutout:
    """One object: the bounding-box crop of instance mask ``name`` (``<sample>#<index>``).

    pixels (h, w, 3) float32 (only meaningful under the mask), mask (h, w) bool; ``ref_size`` is the
    longer side of the image it was cut from (object scales are relative to it).
    """

    name: str
    source: str
    pixels: np.ndarray
    mask: np.ndarray
    ref_size: int


class ConcatSamples(Sequence):
    """Several sample sequences read as one (lazy: ``len`` + ``[i]``)."""

    def __init__(self, parts: Sequence[Sequence[Sample]]) -> None:
        self.parts = list(parts)
        self._ends = np.cumsum([len(p) for p in self.parts]).tolist()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        index = index + len(self) if index < 0 else index
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        part = bisect.bisect_right(self._ends, index)
        return self.parts[part][index - (self._ends[part - 1] if part else 0)]


# --------------------------------------------------------------------------------------------
# Cut, resize, feather, paste
# --------------------------------------------------------------------------------------------


def object_candidates(sample: Sample) -> np.ndarray:
    """Indices of ``sample``'s masks usable as objects: area >= MIN_OBJECT_AREA and <= MAX_OBJECT_FRACTION
    of the image."""
    n, h, w = sample.masks.shape
    areas = sample.masks.reshape(n, h * w).sum(axis=1)  # (N,)
    return np.flatnonzero((areas >= MIN_OBJECT_AREA) & (areas <= MAX_OBJECT_FRACTION * h * w))


def cut_object(sample: Sample, index: int) -> Cutout:
    """Mask ``index`` of ``sample`` and the image under its bounding box, as a :class:`Cutout`."""
    mask = sample.masks[index]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return Cutout(f"{sample.name}#{index}", sample.source, sample.image[box].astype(np.float32),
                  mask[box].copy(), max(sample.image.shape[:2]))


def resize_array(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W[, C]) -> (height, width[, C]) with OpenCV: area averaging to shrink, bilinear to enlarge."""
    shrink = height * width < array.shape[0] * array.shape[1]
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def fit_long_side(image: np.ndarray, long_side: int | None) -> np.ndarray:
    """(H, W, 3) uint8 resized so its longer side is ``long_side`` (None: unchanged)."""
    if long_side is None:
        return image
    k = long_side / max(image.shape[:2])
    return resize_array(image, int(image.shape[0] * k + 0.5), int(image.shape[1] * k + 0.5))


def resize_cutout(cut: Cutout, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale a cut-out by ``factor`` -> pixels (h, w, 3) float32, mask (h, w) bool (coverage >= 0.5).

    Resized premultiplied by the mask, so pixels of the source image outside the mask never bleed
    into the object's edge.
    """
    h, w = (max(1, int(round(s * factor))) for s in cut.mask.shape)
    alpha = cut.mask.astype(np.float32)
    rgba = resize_array(np.dstack([cut.pixels * alpha[..., None], alpha]), h, w)
    coverage = rgba[..., 3]
    pixels = np.clip(rgba[..., :3] / np.maximum(coverage, 1e-6)[..., None], 0.0, 255.0)
    return pixels, coverage >= 0.5


def feather(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool -> (h, w) float32 blending weights: 1 inside, FEATHER_ALPHA on the mask's 1-px edge
    (mask pixels with a non-mask 8-neighbour), 0 outside."""
    m = mask.astype(np.uint8)
    inner = cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return np.where(inner > 0, 1.0, np.where(mask, FEATHER_ALPHA, 0.0)).astype(np.float32)


def frame_window(y0: int, x0: int, size: tuple[int, int],
                 frame: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Overlap of an object of ``size`` (h, w) at top-left (y0, x0) with a ``frame`` (H, W):
    (frame slices, object slices), both empty when it lies outside."""
    (ya, yb), (xa, xb) = _span(y0, size[0], frame[0]), _span(x0, size[1], frame[1])
    return (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def _span(start: int, length: int, limit: int) -> tuple[int, int]:
    """[start, start + length) clipped to [0, limit), as (lo, hi) with lo <= hi."""
    lo = min(max(start, 0), limit)
    return lo, max(min(start + length, limit), lo)


def paste(canvas: np.ndarray, pixels: np.ndarray, mask: np.ndarray, y0: int, x0: int) -> np.ndarray:
    """Blend an object (pixels (h, w, 3), mask (h, w) bool, 1-px feathered edge) into the (H, W, 3) uint8
    ``canvas`` in place at top-left (y0, x0) (parts outside the frame are cut off); returns the pasted
    mask (H, W) bool. Pixels outside the mask are left unchanged."""
    frame_win, obj_win = frame_window(y0, x0, mask.shape, canvas.shape[:2])
    alpha = feather(mask)[obj_win][..., None]
    region = canvas[frame_win].astype(np.float32)
    canvas[frame_win] = np.rint(alpha * pixels[obj_win] + (1.0 - alpha) * region).astype(np.uint8)
    pasted = np.zeros(canvas.shape[:2], dtype=bool)
    pasted[frame_win] = mask[obj_win]
    return pasted


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass
class _Pasted:
    """Bookkeeping of one pasted object: mask (H, W) bool in the frame, updated as later ones occlude it."""

    cut: Cutout
    scale: float
    flip: bool
    area: int  # pixels of the object at its pasted scale, including any part outside the frame
    mask: np.ndarray


class PasteScenes(DatasetReader):
    """Synthetic scenes: 1-4 object cut-outs pasted on a background, masks (N, H, W) bool, one per object.

    Scene ``i`` (named ``paste_{seed}_{i}``) depends only on (seed, i): a background from
    ``backgrounds`` resized so its longer side is ``out_size`` (None: as is), then
    ``objects_per_scene`` (inclusive range) objects, each a random instance mask of a random
    ``objects`` sample (its bounding-box crop; masks under 32x32 px or over 90 % of their image are
    not used), scaled by ``s`` in ``scale`` relative to its size in its own image (an object spanning
    half its image spans ``s / 2`` of the scene), flipped with probability 0.5, and centred at a
    random point of the scene (partly outside is fine), blended with a 1-px feathered edge. Later
    objects occlude earlier ones; an object is dropped when less than ``min_visible`` of its pasted
    area stays visible (in the frame and not occluded). Only pasted objects are labelled; ``extra``
    holds the background's name/source and, per mask, the object names (``<sample>#<mask index>``),
    sources, scales, flips and pasted areas, plus the dropped objects' names.
    """

    kind = "paste"
    layout = "object samples + background samples (any readers)"

    def __init__(
        self,
        objects: Sequence[Sample],
        backgrounds: Sequence[Sample],
        length: int,
        seed: int = 0,
        objects_per_scene: tuple[int, int] = (1, 4),
        scale: tuple[float, float] = (0.3, 1.0),
        out_size: int | None = 512,
        min_visible: float = 0.3,
        root: str | Path = ".",
    ) -> None:
        super().__init__(root)
        lo, hi = (int(v) for v in objects_per_scene)
        checks = [
            (len(objects) > 0 and len(backgrounds) > 0, "objects and backgrounds must not be empty"),
            (length >= 0 and seed >= 0, f"need length >= 0 and seed >= 0, got {length}, {seed}"),
            (1 <= lo <= hi, f"objects_per_scene must be (lo, hi) with 1 <= lo <= hi, got {objects_per_scene}"),
            (0 < scale[0] <= scale[1], f"scale must be (lo, hi) with 0 < lo <= hi, got {scale}"),
            (out_size is None or out_size >= 32, f"out_size must be None or >= 32, got {out_size}"),
            (0.0 <= min_visible <= 1.0, f"min_visible must be in [0, 1], got {min_visible}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"PasteScenes: {message}")
        self.objects, self.backgrounds = objects, backgrounds
        self.seed, self.objects_per_scene = int(seed), (lo, hi)
        self.scale = (float(scale[0]), float(scale[1]))
        self.out_size, self.min_visible = out_size, float(min_visible)
        self._items = [(f"paste_{self.seed}_{i}", i) for i in range(int(length))]

    def _load(self, name: str, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, index])
        background = _draw(self.backgrounds, rng, lambda s: s)
        canvas = fit_long_side(background.image, self.out_size).copy()
        wanted = int(rng.integers(self.objects_per_scene[0], self.objects_per_scene[1] + 1))
        pasted: list[_Pasted] = []
        for _ in range(_MAX_DRAWS):
            if len(pasted) == wanted:
                break
            item = self._paste_one(canvas, rng)
            if item is not None:
                for earlier in pasted:
                    earlier.mask &= ~item.mask
                pasted.append(item)
        visible = [p.mask.sum() >= max(1.0, self.min_visible * p.area) for p in pasted]
        kept = [p for p, ok in zip(pasted, visible, strict=False) if ok]
        if not kept:
            raise DatasetError(f"{name}: no object could be placed", path=name, reason="no object placed")
        dropped = [p for p, ok in zip(pasted, visible, strict=False) if not ok]
        return Sample(name, canvas, np.stack([p.mask for p in kept]), None, source=background.source,
                      extra=_scene_extra(background, kept, dropped))

    def _paste_one(self, canvas: np.ndarray, rng: np.random.Generator) -> _Pasted | None:
        """Draw, scale, flip and place one object and blend it into ``canvas``; None when no position
        keeps ``min_visible`` of it inside the frame."""
        cut = _draw(self.objects, rng, _random_cutout(rng))
        scale, flip = float(rng.uniform(*self.scale)), bool(rng.random() < 0.5)
        pixels, mask = resize_cutout(cut, scale * max(canvas.shape[:2]) / cut.ref_size)
        if flip:
            pixels, mask = pixels[:, ::-1], mask[:, ::-1]
        area = int(mask.sum())
        position = self._place(mask, canvas.shape[:2], area, rng)
        if position is None:
            return None
        return _Pasted(cut, scale, flip, area, paste(canvas, pixels, mask, *position))

    def _place(self, mask: np.ndarray, frame: tuple[int, int], area: int,
               rng: np.random.Generator) -> tuple[int, int] | None:
        """Top-left (y0, x0) putting the object's box centre at a random frame point with at least
        ``min_visible`` of its area (and >= 1 px) inside the frame; None after _MAX_PLACEMENTS tries."""
        h, w = mask.shape
        for _ in range(_MAX_PLACEMENTS):
            y0 = int(np.floor(rng.uniform(0, frame[0]) - h / 2))
            x0 = int(np.floor(rng.uniform(0, frame[1]) - w / 2))
            inside = mask[frame_window(y0, x0, mask.shape, frame)[1]].sum()
            if area and inside >= max(1.0, self.min_visible * area):
                return y0, x0
        return None


def _draw(samples: Sequence[Sample], rng: np.random.Generator, use: Callable[[Sample], T | None]) -> T:
    """``use(sample)`` of the first random sample for which it is not None; corrupt samples (a
    ``DatasetError``, recorded by their reader) are skipped. Raises DatasetError after _MAX_DRAWS."""
    for _ in range(_MAX_DRAWS):
        try:
            result = use(samples[int(rng.integers(len(samples)))])
        except DatasetError:
            continue
        if result is not None:
            return result
    raise DatasetError(f"no usable sample in {_MAX_DRAWS} draws (objects need a mask of at least "
                       f"{MIN_OBJECT_AREA} px and at most {MAX_OBJECT_FRACTION:.0%} of the image)")


def _random_cutout(rng: np.random.Generator) -> Callable[[Sample], Cutout | None]:
    """Sample -> a cut-out of one of its usable masks, chosen with ``rng`` (None when it has none)."""

    def use(sample: Sample) -> Cutout | None:
        candidates = object_candidates(sample)
        return cut_object(sample, int(rng.choice(candidates))) if candidates.size else None

    return use


def _scene_extra(background: Sample, kept: list[_Pasted], dropped: list[_Pasted]) -> dict[str, Any]:
    """Provenance of a scene: per-mask lists aligned with ``Sample.masks``."""
    return {
        "background": background.name,
        "background_source": background.source,
        "objects": [p.cut.name for p in kept],
        "object_sources": [p.cut.source for p in kept],
        "scales": [p.scale for p in kept],
        "flips": [p.flip for p in kept],
        "pasted_areas": [p.area for p in kept],
        "dropped": [p.cut.name for p in dropped],
    }


# --------------------------------------------------------------------------------------------
# The standard mix from the shared data folder
# --------------------------------------------------------------------------------------------


@register_dataset("paste")
def open_paste_scenes(root: str | Path, length: int = 10000, seed: int = 0, **options: Any) -> PasteScenes:
    """Paste scenes from a data folder laid out as ``shared/data``: objects from
    ``coco128-seg/annotations_coco_format.json`` (images under ``coco128-seg/``) + ``BSDS500`` train/val,
    backgrounds from ``BSDS500`` train/val. BSDS train/val drop the GrabCut/Berkeley evaluation photos
    (looked up in ``root``). ``options`` go to :class:`PasteScenes` (lists are accepted for ranges)."""
    root = Path(root)
    coco = root / "coco128-seg"
    bsds = ConcatSamples([BSDS500Dataset(root / "BSDS500", split, eval_data_root=root) for split in ("train", "val")])
    objects = ConcatSamples([CocoDataset(coco / "annotations_coco_format.json", coco), bsds])
    ranges = {k: tuple(v) for k, v in options.items() if k in ("objects_per_scene", "scale")}
    return PasteScenes(objects, bsds, length, seed, root=root, **{**options, **ranges})
