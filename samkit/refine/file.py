"""The refiner file: a samkit model file (:mod:`samkit.models.model_file`: ``.safetensors``, floating
tensors in float16, string metadata) whose metadata says

- ``arch``: ``samref`` (the refiner's architecture); ``format``: ``samkit-refiner/1``;
- ``backbone`` / ``img_size`` / ``embed_dim``: the SAM it was trained behind (registry name, input frame,
  embedding channels);
- ``refiner``: the :class:`~samkit.refine.config.RefinerConfig` as JSON; any other key (training recipe,
  figures) is kept as is.

:func:`load_refiner` takes a bundled name (``samkit_tiny_ref``) or a path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from samkit.errors import CheckpointError
from samkit.models.load import BUNDLED_DIR
from samkit.models.model_file import ModelFileInfo, read_model_info, write_model_file
from samkit.refine.config import RefinerConfig
from samkit.refine.refiner import SamRefiner

REFINER_FORMAT = "samkit-refiner/1"
REFINER_ARCH = "samref"
# samkit_tiny_ref: the refiner at late-fusion cost (a click <= 1.25x samkit_tiny's); samkit_tiny_ref_hq: more
# accurate, ~2.4x the click (docs/refiner.md)
BUNDLED_REFINERS = {"samkit_tiny_ref": "samkit_tiny_ref.fp16.safetensors",
                    "samkit_tiny_ref_hq": "samkit_tiny_ref_hq.fp16.safetensors"}
RENAMED_REFINERS = {"samkit_tiny_ref_fast": "samkit_tiny_ref"}  # an old bundled name: its name now


def refiner_info(cfg: RefinerConfig, extra: dict[str, str] | None = None) -> ModelFileInfo:
    """The file's metadata for a refiner of ``cfg`` (``extra``: more string keys, e.g. the recipe)."""
    return ModelFileInfo(arch=REFINER_ARCH, img_size=cfg.sam_img_size, backbone=cfg.sam_arch,
                         extra={**(extra or {}), "format": REFINER_FORMAT, "embed_dim": str(cfg.embed_dim),
                                "refiner": json.dumps(cfg.to_dict())})


def save_refiner(refiner: SamRefiner, path: str | os.PathLike, extra: dict[str, str] | None = None) -> Path:
    """Write ``refiner`` as a refiner file (float16 tensors), through a temporary file. Returns ``path``."""
    return write_model_file(refiner, path, refiner_info(refiner.cfg, extra))


def read_refiner_file(path: str | os.PathLike) -> tuple[RefinerConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, float16 state dict, metadata) of a refiner file; CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"refiner file not found: {path}")
    info = read_model_info(path)
    if info.arch != REFINER_ARCH or info.extra.get("format") != REFINER_FORMAT:
        raise CheckpointError(f"{path} is not a samkit refiner file (arch {info.arch!r})")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable refiner file (truncated or corrupt): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        cfg = RefinerConfig.from_dict(json.loads(info.extra["refiner"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed refiner settings ({exc})") from None
    return cfg, state, info.to_metadata()


def resolve_refiner(name_or_path: str | os.PathLike) -> Path:
    """The file of a bundled refiner name, or the given path."""
    name = os.fspath(name_or_path)
    if name in BUNDLED_REFINERS:
        path = BUNDLED_DIR / BUNDLED_REFINERS[name]
        if not path.is_file():
            raise CheckpointError(f"refiner {name} is not bundled yet (no {path.name} in samkit/weights): "
                                  f"docs/refiner.md has the samkit train-refiner runs that made it")
        return path
    path = Path(name).expanduser()
    if name in RENAMED_REFINERS and not path.exists():
        raise CheckpointError(f"refiner {name} is now called {RENAMED_REFINERS[name]} (see CHANGELOG.md)")
    if not path.exists():
        raise CheckpointError(f"unknown refiner {name!r}: not a file, and not one of {', '.join(BUNDLED_REFINERS)}")
    return path


def load_refiner(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> SamRefiner:
    """A refiner by bundled name (``samkit_tiny_ref``) or path, in float32, in eval mode on ``device``."""
    path = resolve_refiner(name_or_path)
    cfg, state, meta = read_refiner_file(path)
    refiner = SamRefiner(cfg)
    expected = refiner.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"{path} does not match its refiner settings: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, wrong shapes {bad[:3]}")
    refiner.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    refiner.file_metadata = meta
    return refiner.to(device).eval()
