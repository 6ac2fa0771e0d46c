"""Training configs shared by the training tests (a helper module: test files import it, not each other)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from samkit.train import TrainConfig

STEPS = 15


def tiny_config(out_dir: Path, **changes) -> TrainConfig:
    """mobile_sam architecture, random weights, 256 px, 2 correction rounds: about 0.3 s a step."""
    cfg = TrainConfig(out_dir=str(out_dir), model="mobile_sam", mode="finetune", img_size=256, batch_size=2,
                      steps=STEPS, lr=1e-3, warmup_steps=2, click_rounds=1, mask_only_rounds=1, save_every=5,
                      keep_checkpoints=2, progress=False, export_fp16=True, seed=0)
    return dataclasses.replace(cfg, **changes)
