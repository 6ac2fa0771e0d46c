"""The text trainer's config: :class:`TextTrainConfig` (its optimiser fields and their checks are
:class:`~samkit.train.optim.OptimConfig`'s) and :func:`load_text_config`."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from samkit.models.text_tiny import VARIANTS
from samkit.train.config import _reject_unknown, check_config, read_config_file
from samkit.train.optim import OptimConfig

TEXT_VARIANTS = (*VARIANTS, "constant")


@dataclass
class TextTrainConfig(OptimConfig):
    """One text-prompter training run; see ``configs/samkit_tiny_text_*.json``."""

    out_dir: str = "runs/text"
    variant: str = "early"  # "early" | "late" | "constant" (no text: one learned prompt token)
    model: str = "samkit_tiny"  # the frozen SAM (registry name)
    data_root: str = "../shared/data"  # shared/data-like root with BSDS500/images/<split>/
    cache_dir: str = "runs/text_cache"  # embeddings + expressions, shared between runs
    train_scenes: int = 1500
    expressions_per_scene: int = 6  # at most; the scene's own expression first
    test_scenes: int = 300  # held-out test split, one expression each, evaluated at the end (0: none)
    vocab_size: int = 128  # sentencepiece pieces (at most; fewer when the corpus has fewer)
    beit3: dict[str, Any] = field(default_factory=dict)  # small_beit3_config options (vocab from the tokenizer)
    batch_size: int = 32
    steps: int = 3000
    # optimiser and schedule: OptimConfig's fields (betas, schedule, decay_steps, decay_gamma, grad_clip
    # with its defaults), these with the text trainer's
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 200
    min_lr_ratio: float = 0.02
    focal_alpha: float = 0.25
    # auxiliary loss weight: MSE between the prompt token and the frozen prompt encoder's embedding of a
    # foreground point at the target's innermost pixel (0: off; the same for every variant)
    point_distill: float = 0.0
    # auxiliary loss weight, early fusion only: per-patch BCE of a linear head (trained, not exported) on the
    # BEiT-3's final patch tokens against the target's coverage of each patch (dense grounding supervision
    # that late fusion cannot have: its encoder sees no image). 0: off
    patch_grounding: float = 0.0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    bf16: bool = True
    seed: int = 0
    log_every: int = 20
    save_every: int = 1000  # model snapshot (model.pt) every N steps
    progress: bool = True

    def validate(self) -> TextTrainConfig:
        checks = [
            *self.optim_checks(),
            (self.variant in TEXT_VARIANTS, f"variant must be one of {TEXT_VARIANTS}, got {self.variant!r}"),
            (self.train_scenes >= 1 and self.expressions_per_scene >= 1,
             "need train_scenes >= 1 and expressions_per_scene >= 1"),
            (self.batch_size >= 1 and self.steps >= 1, "batch_size and steps must be >= 1"),
            (self.test_scenes >= 0, "test_scenes must be >= 0"),
            (0.0 < self.focal_alpha < 1.0, "focal_alpha must be in (0, 1)"),
            (self.point_distill >= 0.0, "point_distill must be >= 0"),
            (self.patch_grounding >= 0.0, "patch_grounding must be >= 0"),
            (self.patch_grounding == 0.0 or self.variant == "early",
             f"patch_grounding needs image patches in the text encoder: variant 'early', got {self.variant!r}"),
            (self.vocab_size >= 16, "vocab_size must be >= 16"),
        ]
        check_config(checks, "text training config")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextTrainConfig:
        data = dict(data)
        _reject_unknown(cls, data, "text training config")
        return cls(**cls.coerce(data)).validate()


def load_text_config(source: TextTrainConfig | dict | str | os.PathLike) -> TextTrainConfig:
    """A TextTrainConfig from an object, a dict or a JSON / YAML file."""
    if isinstance(source, TextTrainConfig):
        return source.validate()
    return TextTrainConfig.from_dict(source if isinstance(source, dict) else read_config_file(source))
