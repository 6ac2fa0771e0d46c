"""Training configuration: dataclasses read from / written to JSON (or YAML with PyYAML installed).

Relative paths in a config (dataset roots, ``init_checkpoint``, ``out_dir``) are taken relative to
the working directory, as the command line sees them. A config file may name another as its ``"base"``
(a path relative to the file's own folder): the base's settings, with this file's keys replacing whole
top-level entries (``augment`` or ``datasets`` are replaced, not merged).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samkit._optional import require
from samkit.train.optim import OptimConfig

MODES = ("finetune", "scratch")
LOSS_SIZES = ("full", "low")


@dataclass
class DatasetSpec:
    """One dataset: ``samkit.data.readers.open_dataset(kind, root, **options)``; ``repeat`` > 1 samples it
    that many times more often than a dataset with ``repeat`` 1."""

    kind: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1


@dataclass
class AugmentConfig:
    """Per-item augmentation. ``scale``: the image is resized to ``img_size * s`` (longer side),
    s uniform in [scale_min, scale_max], then cropped (s > 1) or padded to the input frame.
    Colour factors are uniform in [1 - x, 1 + x]; 0 turns one off."""

    hflip: float = 0.5
    scale_min: float = 0.8
    scale_max: float = 1.25
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1


@dataclass
class TrainConfig(OptimConfig):
    """Everything a training run needs; see ``configs/`` for examples. The optimiser fields are
    :class:`~samkit.train.optim.OptimConfig`'s."""

    out_dir: str = "runs/train"
    model: str = "mobile_sam"  # registry name
    init_checkpoint: str | None = None  # None: random weights; "pretrained": released weights; or a file
    mode: str = "finetune"  # "finetune": image encoder frozen; "scratch": everything trained
    datasets: list[DatasetSpec] = field(default_factory=list)
    img_size: int = 1024
    batch_size: int = 1
    steps: int = 1000
    # optimiser (AdamW) and schedule: the fields of OptimConfig (lr, weight_decay, betas, warmup_steps,
    # schedule, min_lr_ratio, decay_steps, decay_gamma, grad_clip), with its defaults
    # interactive simulation
    decoder_warmup_steps: int = 0  # from scratch: box-filling steps for the decoder first (samkit.train.warmup)
    decoder_warmup_lr: float = 2e-4
    focal_alpha: float = 0.25  # focal loss foreground weight (SAM: 0.25; 0.5 = balanced)
    iou_loss_weight: float = 1.0  # the IoU head's MSE against the mask loss (SAM: 1)
    choice_loss_weight: float = 0.0  # cross-entropy of the predicted IoUs against the best output (SAM: 0)
    first_round_weight: float = 1.0  # round 0's loss (the first prompt) against one correction round's (1: alike)
    click_rounds: int = 8  # correction rounds with a new click
    mask_only_rounds: int = 2  # rounds that only feed the previous mask back
    box_prob: float = 0.5  # probability that round 0 is a noisy box rather than a point
    protocol_click_prob: float = 0.0  # per click: near the evaluation protocol's point instead of uniform
    loss_size: str = "full"  # "full": loss at img_size (logits upsampled); "low": at img_size / 4
    # data
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    min_area_frac: float = 1e-4  # objects smaller than this fraction of the input frame are skipped
    num_workers: int = 0  # DataLoader worker processes
    # runtime
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    bf16: bool = True  # bf16 autocast where the device supports it
    seed: int = 0
    save_every: int = 500  # checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2  # numbered checkpoints kept in out_dir/checkpoints
    log_every: int = 1
    stop_at: int | None = None  # stop (checkpoint, export) after this step; the schedule still spans ``steps``
    resume: bool = False  # continue from the last checkpoint in out_dir
    export_fp16: bool = False  # also write model.fp16.safetensors
    progress: bool = True  # tqdm bar

    def validate(self) -> TrainConfig:
        """Raise ValueError on an inconsistent config; returns self."""
        checks = [
            *self.optim_checks(),
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (self.loss_size in LOSS_SIZES, f"loss_size must be one of {LOSS_SIZES}, got {self.loss_size!r}"),
            (self.img_size % 16 == 0 and self.img_size >= 64,
             f"img_size must be a multiple of 16, at least 64, got {self.img_size}"),
            (self.batch_size >= 1 and self.steps >= 1, "batch_size and steps must be >= 1"),
            (self.decoder_warmup_steps >= 0, "decoder_warmup_steps must be >= 0"),
            (self.click_rounds >= 0 and self.mask_only_rounds >= 0, "round counts must be >= 0"),
            (0.0 <= self.box_prob <= 1.0, "box_prob must be in [0, 1]"),
            (0.0 <= self.protocol_click_prob <= 1.0, "protocol_click_prob must be in [0, 1]"),
            (0.0 < self.focal_alpha < 1.0, "focal_alpha must be in (0, 1)"),
            (self.iou_loss_weight >= 0.0 and self.choice_loss_weight >= 0.0,
             "iou_loss_weight and choice_loss_weight must be >= 0"),
            (self.first_round_weight > 0.0, "first_round_weight must be > 0"),
            (self.save_every >= 1 and self.log_every >= 1, "save_every and log_every must be >= 1"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (0 < self.augment.scale_min <= self.augment.scale_max, "need 0 < scale_min <= scale_max"),
        ]
        check_config(checks, "training config")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (as read from JSON/YAML); unknown keys raise ValueError."""
        data = dict(data)
        _reject_unknown(cls, data, "config")
        return cls(**cls.coerce(data_settings(data))).validate()


def data_settings(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``datasets`` (dicts -> DatasetSpec) and ``augment`` (dict -> AugmentConfig) typed;
    unknown keys in them raise ValueError."""
    data = dict(data)
    if "datasets" in data:
        data["datasets"] = [d if isinstance(d, DatasetSpec) else _from_dict(DatasetSpec, d, "dataset")
                            for d in data["datasets"]]
    if isinstance(data.get("augment"), dict):
        data["augment"] = _from_dict(AugmentConfig, data["augment"], "augment")
    return data


def check_config(checks: list[tuple[bool, str]], what: str) -> None:
    """Raise ValueError("bad WHAT: message") for the first (ok, message) check that failed."""
    for ok, message in checks:
        if not ok:
            raise ValueError(f"bad {what}: {message}")


def _reject_unknown(cls: type, data: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {where} keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    _reject_unknown(cls, data, where)
    return cls(**data)


def load_config(source: TrainConfig | dict[str, Any] | str | os.PathLike) -> TrainConfig:
    """A TrainConfig from an object, a dict, or a ``.json`` / ``.yaml`` / ``.yml`` file."""
    if isinstance(source, TrainConfig):
        return source.validate()
    if isinstance(source, dict):
        return TrainConfig.from_dict(source)
    return TrainConfig.from_dict(read_config_file(source))


BASE_KEY = "base"


def read_config_file(source: str | os.PathLike, _children: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings mapping of a ``.json`` / ``.yaml`` / ``.yml`` config file, its ``"base"`` chain resolved
    (the base's top-level settings, each key of this file replacing the base's)."""
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        require("yaml", "yaml", f"{path.name}; or write the config as .json")
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training config is a mapping of settings, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: {BASE_KEY!r} is the path of another config file, got {base!r}")
    base_path = path.parent / base
    chain = (*_children, path.resolve())
    if base_path.resolve() in chain:
        raise ValueError(f"{path}: config bases form a loop: {' -> '.join(p.name for p in (*chain, base_path))}")
    return {**read_config_file(base_path, chain), **data}


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as indented JSON."""
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
