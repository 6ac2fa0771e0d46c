"""Fixtures of the refiner tests: the bundled samkit_tiny (frozen SAM), an untrained refiner for it, and
GrabCut samples from the shared data."""
from __future__ import annotations

import pytest
import torch

from samkit.data.readers import open_dataset
from samkit.models.load import load_model
from samkit.refine import RefinerConfig, SamRefiner


@pytest.fixture(scope="session")
def tiny():
    return load_model("samkit_tiny")


@pytest.fixture()
def refiner(tiny):
    """An untrained refiner behind samkit_tiny (deterministic weights)."""
    torch.manual_seed(0)
    return SamRefiner(RefinerConfig(sam_arch=tiny.arch, sam_img_size=tiny.img_size)).eval()


@pytest.fixture(scope="session")
def grabcut(data_dir):
    return open_dataset("grabcut", data_dir / "GrabCut")
