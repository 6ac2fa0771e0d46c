"""Models for training: registry architectures at any input size (``Sam.set_input_size``), plain
state-dict export (the fp16 ``.safetensors`` export is :func:`samkit.models.model_file.write_model_file`). A model
trained at 256 or 512 has exactly the registry's state-dict keys and
shapes and loads with :func:`samkit.load_model`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import torch
from torch import nn

from samkit.io_utils import atomic_path
from samkit.models.hub import load_state_dict_file, load_weights
from samkit.models.load import fetch_checkpoint
from samkit.models.registry import resolve_name
from samkit.models.sam import Sam

PRETRAINED = "pretrained"  # init_checkpoint value: the released weights from the samkit cache


def build_model(name: str, img_size: int = 1024, init_checkpoint: str | os.PathLike | None = None) -> Sam:
    """Registry model ``name`` at ``img_size`` (a multiple of 16), in train mode on the CPU.

    ``init_checkpoint``: None for random weights, ``"pretrained"`` for the released checkpoint
    (downloaded into the cache when missing), or a checkpoint file of that architecture.
    """
    spec = resolve_name(name)
    model = cast(Sam, spec.builder())  # a registry builder returns a Sam (or an EvfSam, which has its interface)
    if init_checkpoint is not None:
        path = fetch_checkpoint(spec) if os.fspath(init_checkpoint) == PRETRAINED else Path(init_checkpoint)
        load_weights(model, load_state_dict_file(path), spec.name)
    model.set_input_size(img_size)
    return model.train()


def trainable_parameters(model: Sam, mode: str) -> list[nn.Parameter]:
    """``"finetune"``: freeze the image encoder, train prompt encoder + mask decoder;
    ``"scratch"``: train everything. Sets ``requires_grad`` and returns the trained parameters."""
    if mode not in ("finetune", "scratch"):
        raise ValueError(f"mode must be 'finetune' or 'scratch', got {mode!r}")
    model.image_encoder.requires_grad_(mode == "scratch")
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model: Sam, mode: str) -> None:
    """Train mode, except a frozen encoder stays in eval mode (fixed BatchNorm statistics, no dropout)."""
    model.train()
    if mode == "finetune":
        model.image_encoder.eval()


def export_state_dict(model: Sam, path: str | os.PathLike) -> Path:
    """Write the plain registry-layout state dict (float32, CPU) to ``path`` (``model.pt``)."""
    path = Path(path)
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    atomic_save(state, path)
    return path


def atomic_save(obj: object, path: Path) -> None:
    """torch.save via a temporary file, so a crash never leaves a truncated ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
