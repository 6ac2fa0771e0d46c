"""Training SAM-family models: SAM's interactive recipe (focal + dice + IoU losses, simulated clicks).

>>> from samkit.train import train
>>> train("configs/finetune_mobile_sam_bsds.json")
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from samkit.data.sample import Sample
from samkit.train.config import AugmentConfig, DatasetSpec, TrainConfig, load_config
from samkit.train.model import build_model
from samkit.train.trainer import Trainer, TrainResult, read_log


def train(config: TrainConfig | dict | str | os.PathLike,
          samples: Sequence[Sample] | Sequence[Sequence[Sample]] | None = None) -> TrainResult:
    """Run (or, with ``resume``, continue) the training described by ``config`` (a TrainConfig, a dict,
    or a JSON/YAML file). ``samples`` replaces the config's datasets (in-memory data, tests)."""
    return Trainer(load_config(config), samples).run()


__all__ = ["AugmentConfig", "DatasetSpec", "TrainConfig", "TrainResult", "Trainer", "build_model", "load_config",
           "read_log", "train"]
