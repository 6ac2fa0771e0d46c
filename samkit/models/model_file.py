"""samkit's exported model files: one ``.safetensors`` state dict (floating tensors in float16) whose
string metadata says how to build the model. This module owns the format: :func:`write_model_file`
writes one, :func:`read_model_info` reads its metadata back as a :class:`ModelFileInfo`.

Metadata keys (all values are strings in the file): ``arch`` (registry name), ``img_size`` (the
input frame the model runs at: the one it was trained at, unless it was chosen on validation data, as
samkit_tiny's 320 after training at 256); text models add ``variant`` (early / late fusion),
``backbone`` (registry name of the SAM inside) and ``beit3`` (the BEiT-3 config as JSON). Any other
key is kept as is in :attr:`ModelFileInfo.extra` (training recipe, recommended settings, ...), so
files written by a newer samkit still read.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from samkit.errors import CheckpointError
from samkit.io_utils import atomic_path

MODEL_FILE_SUFFIX = ".safetensors"
_KNOWN = ("arch", "img_size", "variant", "backbone", "beit3")
AMG_KEYS = ("amg_pred_iou_thresh", "amg_stability_score_thresh", "amg_stability_score_offset", "amg_crop_n_layers",
            "amg_crop_n_points_downscale_factor")
_AMG_INT_FLOORS = {"amg_crop_n_layers": 0, "amg_crop_n_points_downscale_factor": 1}  # whole numbers, at least


@dataclass(frozen=True)
class ModelFileInfo:
    """Metadata of a samkit model file: the known keys typed, every other key (as stored) in ``extra``."""

    arch: str | None = None
    img_size: int | None = None
    variant: str | None = None
    backbone: str | None = None
    beit3: dict[str, Any] | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> ModelFileInfo:
        """Parse a file's metadata; raises ValueError for a malformed ``img_size`` or ``beit3``."""
        img_size = meta.get("img_size")
        beit3 = meta.get("beit3")
        return cls(arch=meta.get("arch"), img_size=int(img_size) if img_size is not None else None,
                   variant=meta.get("variant"), backbone=meta.get("backbone"),
                   beit3=json.loads(beit3) if beit3 is not None else None,
                   extra={k: v for k, v in meta.items() if k not in _KNOWN})

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata (str -> str) of this info; unset keys are left out."""
        known: dict[str, str] = {}
        for key in _KNOWN:
            value = getattr(self, key)
            if value is not None:
                known[key] = json.dumps(value) if key == "beit3" else str(value)
        return {**{k: str(v) for k, v in self.extra.items()}, **known}

    @property
    def recommended_amg(self) -> dict[str, float]:
        """Everything-mode settings the model recommends (``amg_pred_iou_thresh``,
        ``amg_stability_score_thresh``, ``amg_stability_score_offset``, ``amg_crop_n_layers``,
        ``amg_crop_n_points_downscale_factor``; fitted on validation data when the model was made), as
        floats; empty when the file has none."""
        out = {}
        for key in AMG_KEYS:
            if key in self.extra:
                try:
                    out[key] = float(self.extra[key])
                except ValueError:
                    raise CheckpointError(f"malformed {key} in model metadata: {self.extra[key]!r}") from None
                least = _AMG_INT_FLOORS.get(key)
                if least is not None and (out[key] < least or not out[key].is_integer()):
                    raise CheckpointError(f"malformed {key} in model metadata: {self.extra[key]!r}")
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """A known field, or an ``extra`` key as stored; ``default`` when absent."""
        value = getattr(self, key) if key in _KNOWN else self.extra.get(key)
        return default if value is None else value


def write_model_file(model: nn.Module, path: str | os.PathLike, info: ModelFileInfo | None = None) -> Path:
    """Write ``model``'s state dict with floating tensors in float16, and ``info`` (default: the model's
    ``arch`` and ``img_size``) as metadata, through a temporary file. Returns ``path``."""
    if info is None:
        info = ModelFileInfo(arch=getattr(model, "arch", None), img_size=getattr(model, "img_size", None))
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().to("cpu")).contiguous()
             for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=info.to_metadata())
    return Path(path)


def read_model_info(path: str | os.PathLike) -> ModelFileInfo:
    """Metadata of a samkit model file. Other checkpoints (``.pt``, ``.pth``, a directory, a
    ``.safetensors`` without metadata) give an empty info; an unreadable ``.safetensors`` file or
    malformed metadata raises :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir() or path.suffix != MODEL_FILE_SUFFIX:
        return ModelFileInfo()
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return ModelFileInfo.from_metadata(meta)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read the metadata of {path}: {exc}") from None
