"""Fixtures for the training tests: tiny real (GrabCut) and synthetic Samples, one torch thread."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samkit.data.sample import Sample


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """Tiny models on one thread: as fast as two on an idle machine, and no slowdown when the
    cores are shared with other processes (OpenMP threads waiting on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disk_sample(name: str, rng: np.random.Generator, size: tuple[int, int] = (96, 128)) -> Sample:
    """A noisy grey image with one red disk (the object) and a blue square (a second object)."""
    h, w = size
    image = (rng.random((h, w, 3)) * 60 + 60).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.integers(h // 3, h // 2), rng.integers(w // 4, w // 2), rng.integers(h // 6, h // 4)
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    square = np.zeros((h, w), dtype=bool)
    square[h - 30:h - 8, w - 30:w - 8] = True
    image[disk] = (200, 50, 50)
    image[square] = (40, 60, 210)
    return Sample(name, image, np.stack([disk, square]))


def grabcut_sample(data_dir: Path, name: str, shrink: int = 4) -> Sample:
    """A GrabCut image with its boundary_GT mask (255 object, 128 ignore band), downscaled ``shrink`` x."""
    root = data_dir / "GrabCut"
    image_path = next(p for p in (root / "data_GT").iterdir() if p.stem == name)
    image = Image.open(image_path).convert("RGB")
    gt = Image.open(root / "boundary_GT" / f"{name}.bmp").convert("L")
    size = (image.width // shrink, image.height // shrink)
    pixels = np.asarray(image.resize(size, Image.BILINEAR))
    values = np.asarray(gt.resize(size, Image.NEAREST))
    return Sample(name, pixels, (values > 128)[None], values == 128, source=str(image_path))


@pytest.fixture(scope="session")
def tiny_samples(data_dir: Path) -> list[Sample]:
    """Two real GrabCut samples (downscaled) and two synthetic ones."""
    rng = np.random.default_rng(0)
    return [grabcut_sample(data_dir, "106024"), grabcut_sample(data_dir, "124080"),
            disk_sample("disk0", rng), disk_sample("disk1", rng)]
