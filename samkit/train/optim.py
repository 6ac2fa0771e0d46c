"""The optimiser core both trainers share: :class:`OptimConfig` (AdamW and the learning-rate schedule,
inherited by :class:`~samkit.train.config.TrainConfig` and the text trainer's config, so their JSON
keys stay flat), its checks, and one :func:`build_optimizer` / :func:`build_schedule`."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

SCHEDULES = ("cosine", "step", "constant")


@dataclass
class OptimConfig:
    """AdamW (weight decay on matrices and kernels only) and the schedule: linear warm-up over
    ``warmup_steps``, then cosine to ``min_lr_ratio`` * lr, step decay (x ``decay_gamma`` at each of
    ``decay_steps``) or constant. ``grad_clip``: max global gradient norm (None: no clipping)."""

    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 50
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    decay_steps: list[int] = field(default_factory=list)  # step schedule: multiply by decay_gamma at each
    decay_gamma: float = 0.1
    grad_clip: float | None = 1.0

    def optim_checks(self) -> list[tuple[bool, str]]:
        """(ok, message) checks of the optimiser fields, for ``check_config``."""
        return [
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or null, got {self.grad_clip}"),
        ]

    @staticmethod
    def coerce(data: dict[str, Any]) -> dict[str, Any]:
        """Settings read from JSON / YAML with the optimiser fields in their types (``betas`` a tuple)."""
        if "betas" in data:
            data["betas"] = tuple(float(b) for b in data["betas"])
        return data


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of ``cfg.lr`` for optimiser step ``step`` (0-based) of a run of ``total_steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        progress = min((step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1), 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.decay_gamma ** sum(step >= s for s in cfg.decay_steps)
    if cfg.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {cfg.schedule!r}: expected one of {SCHEDULES}")


def build_optimizer(params: Sequence[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and kernels only (not on biases, norms or 1-D tables)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of ``cfg`` over ``total_steps`` (call ``.step()`` after each optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, total_steps))


def clip_gradients(params: Sequence[torch.nn.Parameter], cfg: OptimConfig) -> float | None:
    """Clip the global gradient norm to ``cfg.grad_clip``; the norm before clipping (None: no clipping)."""
    if cfg.grad_clip is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
