"""Training items from :class:`~samkit.data.sample.Sample` s: one object per item, augmented, in the
model's input frame (resize longest side to ``img_size``, pad bottom/right, as at inference).

A batch for step ``s`` depends only on (seed, s), so a resumed run sees exactly the batches the
uninterrupted run would have seen, whatever the number of loader workers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from samkit.data.readers import open_dataset
from samkit.data.refer import RefSample
from samkit.data.sample import Sample
from samkit.errors import SamkitError
from samkit.predict.transforms import PIXEL_MEAN, PIXEL_STD, resize_image, resized_shape
from samkit.train.config import AugmentConfig, DatasetSpec, TrainConfig

_MAX_DRAWS = 100  # samples tried before giving up on finding an object big enough
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class TrainItem:
    """One object in the input frame: image (3,S,S) float32 normalised and zero-padded; target (S,S)
    bool; valid (S,S) bool, the pixels that count (inside the image, not ignored)."""

    image: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor


def build_dataset(spec: DatasetSpec) -> Sequence[Sample]:
    """The samples of one configured dataset (:func:`samkit.data.readers.open_dataset`)."""
    return open_dataset(spec.kind, spec.root, **spec.options)


def eligible_objects(sample: Sample, min_area_frac: float) -> np.ndarray:
    """Indices of ``sample``'s masks covering at least ``min_area_frac`` of the (square) input frame."""
    h, w = sample.image.shape[:2]
    masks = sample.masks if sample.ignore is None else sample.masks & ~sample.ignore
    areas = masks.reshape(len(masks), h * w).sum(axis=1)  # (N,); N may be 0 (an unlabelled image)
    return np.flatnonzero(areas >= max(min_area_frac * max(h, w) ** 2, 1))


def _resize_mask(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H,W) bool -> (h,w) bool: bilinear (antialiased) coverage >= 0.5."""
    img = Image.fromarray(mask.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img) >= 0.5


def colour_jitter(image: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(H,W,3) uint8 -> float32 0..255 with brightness, contrast and saturation factors in [1-x, 1+x]."""
    x = image.astype(np.float32)
    b, c, s = (rng.uniform(1 - v, 1 + v) for v in (aug.brightness, aug.contrast, aug.saturation))
    x *= b
    grey = x @ _GREY
    x = (x - grey.mean()) * c + grey.mean()
    grey = (x @ _GREY)[..., None]
    x = grey + (x - grey) * s
    return np.clip(x, 0, 255)


def _crop_window(target: np.ndarray, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left (y0, x0) of a size x size window of ``target``'s frame containing a random object pixel."""
    h, w = target.shape
    ys, xs = np.nonzero(target)
    if ys.size:
        k = rng.integers(ys.size)
        cy, cx = int(ys[k]), int(xs[k])
    else:
        cy, cx = h // 2, w // 2
    y0 = rng.integers(max(0, cy - size + 1), min(cy, h - size) + 1) if h > size else 0
    x0 = rng.integers(max(0, cx - size + 1), min(cx, w - size) + 1) if w > size else 0
    return int(y0), int(x0)


def make_item(sample: Sample, index: int, img_size: int, aug: AugmentConfig | None,
              rng: np.random.Generator) -> TrainItem:
    """Object ``index`` of ``sample`` as a TrainItem; ``aug`` None: no augmentation (plain resize + pad)."""
    image, target = sample.image, sample.masks[index]
    ignore = sample.ignore if sample.ignore is not None else np.zeros(target.shape, dtype=bool)
    scale = 1.0
    if aug is not None:
        if rng.random() < aug.hflip:
            image, target, ignore = image[:, ::-1], target[:, ::-1], ignore[:, ::-1]
        scale = rng.uniform(aug.scale_min, aug.scale_max)
    long_side = max(int(round(img_size * scale)), 1)
    h, w = resized_shape(image.shape[0], image.shape[1], long_side)
    pixels = resize_image(np.ascontiguousarray(image), long_side)
    target, ignore = _resize_mask(target, h, w), _resize_mask(ignore, h, w)
    if h > img_size or w > img_size:
        y0, x0 = _crop_window(target, img_size, rng)
        window = (slice(y0, y0 + img_size), slice(x0, x0 + img_size))
        pixels, target, ignore = pixels[window], target[window], ignore[window]
    pixels = colour_jitter(pixels, aug, rng) if aug is not None else pixels.astype(np.float32)
    return _pad_item(pixels, target, ignore, img_size)


def _pad_item(pixels: np.ndarray, target: np.ndarray, ignore: np.ndarray, img_size: int) -> TrainItem:
    """Normalise (h,w,3) float 0..255 pixels and zero-pad everything to img_size x img_size (bottom/right)."""
    h, w = target.shape
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    x = (x - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    image = torch.zeros(3, img_size, img_size)
    image[:, :h, :w] = x.permute(2, 0, 1)
    t = torch.zeros(img_size, img_size, dtype=torch.bool)
    t[:h, :w] = torch.from_numpy(np.ascontiguousarray(target & ~ignore))
    valid = torch.zeros(img_size, img_size, dtype=torch.bool)
    valid[:h, :w] = torch.from_numpy(np.ascontiguousarray(~ignore))
    return TrainItem(image, t, valid)


def low_res_targets(targets: torch.Tensor, valid: torch.Tensor, factor: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,S,S) bool targets / valid -> (B,S/f,S/f) bool: a cell is foreground (valid) when at least half
    of its pixels are."""
    pool = lambda m: F.avg_pool2d(m[:, None].float(), factor)[:, 0] >= 0.5  # noqa: E731
    return pool(targets), pool(valid)


class SampleMix:
    """Several sample sequences drawn from as one; a sequence with ``repeat`` r is drawn r times as
    often per sample as one with repeat 1. Sequences are read lazily (``len`` + ``[i]``)."""

    def __init__(self, parts: Sequence[Sequence[Sample]], repeats: Sequence[int] | None = None) -> None:
        self.parts = [p if _random_access(p) else list(p) for p in parts]
        repeats = list(repeats) if repeats is not None else [1] * len(self.parts)
        weights = np.array([len(p) * r for p, r in zip(self.parts, repeats, strict=False)], dtype=np.float64)
        if weights.sum() <= 0:
            raise ValueError("no training samples: every dataset is empty")
        self.probs = weights / weights.sum()

    def draw(self, rng: np.random.Generator) -> Sample:
        part = self.parts[int(rng.choice(len(self.parts), p=self.probs))]
        return part[int(rng.integers(len(part)))]


def _random_access(obj: object) -> bool:
    return hasattr(obj, "__len__") and hasattr(obj, "__getitem__")


class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset whose index is the training step: ``[step]`` -> a collated batch dict with
    images (B,3,S,S) float32, targets (B,S,S) bool, valid (B,S,S) bool, names (list of B str)."""

    def __init__(self, samples: SampleMix, cfg: TrainConfig) -> None:
        self.samples = samples
        self.img_size = cfg.img_size
        self.batch_size = cfg.batch_size
        self.augment = cfg.augment
        self.min_area_frac = cfg.min_area_frac
        self.seed = cfg.seed
        self.steps = cfg.steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, int(step), 0])
        items, names = [], []
        for _ in range(self.batch_size):
            item, name = self._draw_item(rng)
            items.append(item)
            names.append(name)
        return {"images": torch.stack([i.image for i in items]), "targets": torch.stack([i.target for i in items]),
                "valid": torch.stack([i.valid for i in items]), "names": names}

    def _draw_item(self, rng: np.random.Generator) -> tuple[TrainItem, str]:
        for _ in range(_MAX_DRAWS):
            try:
                sample = self.samples.draw(rng)
            except SamkitError:  # a corrupt file: the reader reports it, training goes on
                continue
            candidates = eligible_objects(sample, self.min_area_frac)
            if candidates.size == 0:
                continue
            index = int(rng.choice(candidates))
            item = make_item(sample, index, self.img_size, self.augment, rng)
            if item.target.any():
                return item, f"{sample.name}#{index}"
        raise RuntimeError(f"no object of at least {self.min_area_frac:g} of the frame in {_MAX_DRAWS} draws: "
                           "check the datasets or lower min_area_frac")


def as_sequences(sources: Sequence[Sample] | Sequence[Sequence[Sample]]) -> list[Sequence[Sample]]:
    """One sequence of Samples, or a list of them (dataset readers, lists, any iterable) -> a list of sequences."""
    items: Sequence[Any] = sources if _random_access(sources) else list(sources)
    if len(items) == 0 or isinstance(items[0], Sample):
        return [items]
    return list(items)


class ReferTorchDataset(torch.utils.data.Dataset):
    """Referring samples (ReferScenes, RefDataset, ...) as training items in the model's input frame
    (:func:`make_item`: longer side resized to ``img_size``, zero-padded, normalised).

    ``[i]`` -> {"image": (3, S, S) float32, "target": (S, S) bool, "valid": (S, S) bool, "text": str,
    "name": str}; :func:`collate_refer` stacks them into the trainer's batch keys (images, targets,
    valid, names) plus ``texts``. ``augment`` (an ``AugmentConfig``) never flips: a mirror image would
    swap "left" and "right" in the expressions. Item ``i`` depends only on (seed, i)."""

    def __init__(self, samples: Sequence[RefSample], img_size: int = 256, augment: AugmentConfig | None = None,
                 seed: int = 0) -> None:
        self.samples, self.img_size, self.seed = samples, int(img_size), int(seed)
        self.augment = None if augment is None else replace(augment, hflip=0.0)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        item = make_item(sample, 0, self.img_size, self.augment, np.random.default_rng([self.seed, int(index)]))
        return {"image": item.image, "target": item.target, "valid": item.valid, "text": sample.sentence,
                "name": sample.name}


def collate_refer(items: Sequence[dict]) -> dict:
    """Batch of :class:`ReferTorchDataset` items: images (B, 3, S, S), targets / valid (B, S, S) bool,
    texts and names (lists of B str)."""
    return {"images": torch.stack([i["image"] for i in items]), "targets": torch.stack([i["target"] for i in items]),
            "valid": torch.stack([i["valid"] for i in items]), "texts": [i["text"] for i in items],
            "names": [i["name"] for i in items]}
