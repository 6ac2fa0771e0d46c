"""``load_model``: registry names, local checkpoint files, cached downloads."""
from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from samkit.errors import CheckpointError, SamkitError
from samkit.models.evf_load import load_evf_directory
from samkit.models.evf_sam import EvfSam
from samkit.models.hf_format import fetch_directory, is_complete
from samkit.models.hub import cache_dir, download, guess_architecture, load_state_dict_file, load_weights
from samkit.models.model_file import read_model_info
from samkit.models.registry import ModelSpec, resolve_name
from samkit.models.sam import Sam

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"  # weights shipped inside the package


def cached_path(spec: ModelSpec) -> Path | None:
    """Where ``spec``'s checkpoint lives: in the package for bundled weights, else in the cache dir
    (a directory for Hugging Face repositories; None for models without one)."""
    if spec.bundled:
        return BUNDLED_DIR / spec.bundled
    return cache_dir() / spec.filename if spec.filename else None


def is_cached(spec: ModelSpec) -> bool:
    """Whether ``spec``'s checkpoint is present (for a directory: its config and every weight file)."""
    path = cached_path(spec)
    if path is None:
        return False
    return is_complete(path) if spec.hub_repo else path.is_file()


def fetch_checkpoint(spec: ModelSpec, progress: bool = True) -> Path:
    """Path of ``spec``'s checkpoint, downloading it into the cache dir when missing."""
    path = cached_path(spec)
    if spec.bundled:
        if path is None or not path.is_file():
            raise CheckpointError(f"{spec.name}'s weights should ship inside samkit at {path} but are missing: "
                                  "reinstall samkit (pip install -e . from a full checkout)")
        return path
    if path is None or spec.url is None:
        raise CheckpointError(f"{spec.name} has no released checkpoint to download; pass checkpoint=PATH")
    if spec.hub_repo:
        if not is_complete(path):
            fetch_directory(spec.url, path, progress=progress)
        return path
    if not path.is_file():
        download(spec.url, path, sha256=spec.sha256, md5_prefix=spec.md5_prefix, expected_size=spec.size,
                 progress=progress)
    return path


def load_model(name_or_path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
               device: str | torch.device = "cpu", pretrained: bool = True, progress: bool = True,
               **options: object) -> Sam | EvfSam:
    """Build a model and load its weights; returns it in eval mode on ``device``.

    - an existing checkpoint file: its architecture is recognised from its keys and it is loaded as is;
    - a Hugging Face-format checkpoint directory (EVF-SAM: config.json, weights, tokenizer);
    - a registry name (``samkit.list_models()``): ``checkpoint=`` gives the file (or directory), otherwise
      the released checkpoint is taken from the cache dir (``$SAMKIT_HOME``, default ``~/.cache/samkit``)
      and downloaded there when missing;
    - ``pretrained=False`` builds the architecture with random weights (with a warning);
    - ``options`` go to the builder, e.g. ``load_model("evf_sam", backbone="sam_vit_b", pretrained=False)``
      (with a checkpoint directory they override its config.json).
    """
    source = os.fspath(name_or_path)
    if os.path.isdir(source):
        if checkpoint is not None:
            raise SamkitError("give either a checkpoint directory or a model name with checkpoint=, not both")
        return _ready(load_evf_directory(source, _builder(resolve_name("evf_sam")), **options), source, device)
    if os.path.isfile(source):
        if checkpoint is not None:
            raise SamkitError("give either a checkpoint file or a model name with checkpoint=, not two files")
        if options:
            raise SamkitError(f"build options ({', '.join(options)}) need a model name: "
                              f"load_model(NAME, checkpoint={source!r}, ...)")
        state = load_state_dict_file(source)
        arch = guess_architecture(state)
        if arch is None:
            raise CheckpointError(f"cannot tell which architecture {source} belongs to; "
                                  "load it with load_model(NAME, checkpoint=PATH) / --model NAME --checkpoint PATH")
        model = _build(arch)
        load_weights(model, state, arch)
        img_size = trained_input_size(source)
        if img_size is not None and img_size != model.img_size:
            model.set_input_size(img_size)
        return _ready(model, source, device)
    try:
        spec = resolve_name(source)
    except KeyError as exc:
        if source.endswith(_CHECKPOINT_SUFFIXES) or os.sep in source:
            raise CheckpointError(f"checkpoint not found: {source}") from None
        raise SamkitError(exc.args[0]) from None
    if checkpoint is not None and os.path.isdir(checkpoint):
        if not spec.hub_repo:
            raise CheckpointError(f"{os.fspath(checkpoint)} is a directory, but {spec.name} checkpoints are "
                                  "single files (.pth / .pt / .safetensors)")
        return _ready(load_evf_directory(checkpoint, _builder(spec), **options), os.fspath(checkpoint), device)
    if spec.hub_repo and checkpoint is None and pretrained:
        path = fetch_checkpoint(spec, progress=progress)
        return _ready(load_evf_directory(path, _builder(spec), **options), str(path), device)
    model = _model(_builder(spec)(**options))
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


def _builder(spec: ModelSpec) -> Callable[..., nn.Module]:
    """``spec.builder``, taking options; a wrong option name or value is a SamkitError."""
    def build(**options: object) -> nn.Module:
        params = inspect.signature(spec.builder).parameters
        unknown = [k for k in options if k not in params]
        if unknown:
            raise SamkitError(f"{spec.name} does not take the option(s) {', '.join(unknown)}; "
                              f"its options: {', '.join(params) or 'none'}")
        try:
            return spec.builder(**options)
        except (KeyError, ValueError) as exc:
            raise SamkitError(f"cannot build {spec.name}: {exc.args[0]}") from None

    return build


def trained_input_size(path: str | os.PathLike) -> int | None:
    """The input frame a samkit-exported ``.safetensors`` file was trained at (its ``img_size``
    metadata), or None (other files: the architecture's default frame)."""
    try:
        return read_model_info(path).img_size
    except CheckpointError:
        return None


def _build(arch: str) -> Sam | EvfSam:
    try:
        return _model(resolve_name(arch).builder())
    except KeyError:
        raise CheckpointError(f"checkpoint is a {arch} model, which this version of samkit cannot build") from None


def _model(model: nn.Module) -> Sam | EvfSam:
    """A builder's model, checked to be one of the two model classes (the loaders set their attributes)."""
    if not isinstance(model, (Sam, EvfSam)):
        raise TypeError(f"model builders return a Sam or an EvfSam, not a {type(model).__name__}")
    return model


def _ready(module: nn.Module, weights: str, device: str | torch.device) -> Sam | EvfSam:
    model = _model(module)
    model.weights = weights  # where the weights came from: a path, or "random"
    # everything-mode thresholds stored with the weights (samkit model files), used when the user sets none
    model.recommended_amg = read_model_info(weights).recommended_amg if os.path.isfile(weights) else {}
    return model.to(device).eval()
