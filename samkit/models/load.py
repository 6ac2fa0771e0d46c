"""``load_model``: registry names, local checkpoint files, cached downloads."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from samkit.errors import CheckpointError, SamkitError
from samkit.models.hub import cache_dir, download, guess_architecture, load_state_dict_file, load_weights
from samkit.models.input_size import set_input_size
from samkit.models.registry import ModelSpec, resolve_name

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"  # weights shipped inside the package


def cached_path(spec: ModelSpec) -> Path | None:
    """Where ``spec``'s checkpoint lives: in the package for bundled weights, else in the cache dir
    (None for models without one)."""
    if spec.bundled:
        return BUNDLED_DIR / spec.bundled
    return cache_dir() / spec.filename if spec.filename else None


def fetch_checkpoint(spec: ModelSpec, progress: bool = True) -> Path:
    """Path of ``spec``'s checkpoint, downloading it into the cache dir when missing."""
    path = cached_path(spec)
    if spec.bundled:
        if not path.is_file():
            raise CheckpointError(f"{spec.name}'s weights should ship inside samkit at {path} but are missing: "
                                  "reinstall samkit (pip install -e . from a full checkout)")
        return path
    if path is None or spec.url is None:
        raise CheckpointError(f"{spec.name} has no released checkpoint to download; pass checkpoint=PATH")
    if not path.is_file():
        download(spec.url, path, sha256=spec.sha256, md5_prefix=spec.md5_prefix, expected_size=spec.size,
                 progress=progress)
    return path


def load_model(name_or_path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
               device: str | torch.device = "cpu", pretrained: bool = True, progress: bool = True) -> nn.Module:
    """Build a model and load its weights; returns it in eval mode on ``device``.

    - an existing checkpoint file: its architecture is recognised from its keys and it is loaded as is;
    - a registry name (``samkit.list_models()``): ``checkpoint=`` gives the file, otherwise the released
      checkpoint is taken from the cache dir (``$SAMKIT_HOME``, default ``~/.cache/samkit``) and
      downloaded there when missing;
    - ``pretrained=False`` builds the architecture with random weights (with a warning).
    """
    source = os.fspath(name_or_path)
    if os.path.isfile(source):
        if checkpoint is not None:
            raise SamkitError("give either a checkpoint file or a model name with checkpoint=, not two files")
        state = load_state_dict_file(source)
        arch = guess_architecture(state)
        if arch is None:
            raise CheckpointError(f"cannot tell which architecture {source} belongs to; "
                                  "load it with load_model(NAME, checkpoint=PATH) / --model NAME --checkpoint PATH")
        model = _build(arch)
        load_weights(model, state, arch)
        img_size = trained_input_size(source)
        if img_size is not None and img_size != model.img_size:
            set_input_size(model, img_size)
        return _ready(model, source, device)
    try:
        spec = resolve_name(source)
    except KeyError as exc:
        if source.endswith(_CHECKPOINT_SUFFIXES) or os.sep in source:
            raise CheckpointError(f"checkpoint not found: {source}") from None
        raise SamkitError(exc.args[0]) from None
    model = spec.builder()
    if checkpoint is not None:
        load_weights(model, load_state_dict_file(checkpoint), spec.name)
        return _ready(model, os.fspath(checkpoint), device)
    if not pretrained:
        warnings.warn(f"{spec.name} built with random weights (pretrained=False): its masks are meaningless",
                      stacklevel=2)
        return _ready(model, "random", device)
    path = fetch_checkpoint(spec, progress=progress)
    load_weights(model, load_state_dict_file(path), spec.name)
    return _ready(model, str(path), device)


def trained_input_size(path: str | os.PathLike) -> int | None:
    """The input frame a samkit-exported ``.safetensors`` file was trained at (its ``img_size``
    metadata), or None (other files: the architecture's default frame)."""
    if not os.fspath(path).endswith(".safetensors"):
        return None
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            value = (f.metadata() or {}).get("img_size")
        return int(value) if value is not None else None
    except (OSError, ValueError, RuntimeError):
        return None


def _build(arch: str) -> nn.Module:
    try:
        return resolve_name(arch).builder()
    except KeyError:
        raise CheckpointError(f"checkpoint is a {arch} model, which this version of samkit cannot build") from None


def _ready(model: nn.Module, weights: str, device: str | torch.device) -> nn.Module:
    model.weights = weights  # where the weights came from: a path, or "random"
    return model.to(device).eval()
