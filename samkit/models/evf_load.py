"""EVF-SAM checkpoint directories (Hugging Face format): config.json <-> builder options, load and save."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from samkit.errors import CheckpointError
from samkit.models.beit3 import BEIT3_CONFIGS, Beit3Config
from samkit.models.evf_sam import EvfSam
from samkit.models.hf_format import load_directory_weights, read_config, save_directory, tokenizer_file
from samkit.models.hub import load_weights
from samkit.models.text_tokenizer import XlmrTokenizer

SAM_SCALES = {"huge": "sam_vit_h", "large": "sam_vit_l", "base": "sam_vit_b"}  # EVF-SAM's config.sam_scale
PROMPT_DIM = 256
_UNSUPPORTED = ("Sam2", "EffiSam")  # EVF-SAM2 and EVF-Effi-SAM use other mask decoders


def build_options(config: dict) -> dict:
    """Builder options (``backbone``, ``text_encoder``) from an EVF-SAM config.json.

    ``samkit_backbone`` / ``samkit_beit3`` (written by :func:`evf_config` for layouts the released
    config keys cannot name) take precedence over ``sam_scale`` / ``mm_extractor_scale``.
    """
    arch = " ".join(str(a) for a in config.get("architectures") or [])
    if any(tag in arch for tag in _UNSUPPORTED):
        raise CheckpointError(f"{arch} checkpoints are not supported: samkit loads EVF-SAM with SAM (v1) inside, "
                              "e.g. YxZhang/evf-sam or YxZhang/evf-sam-multitask")
    backbone = config.get("samkit_backbone")
    if backbone is None:
        scale = config.get("sam_scale", "huge")
        if scale not in SAM_SCALES:
            raise CheckpointError(f"config.json: sam_scale {scale!r} is not one of {', '.join(SAM_SCALES)}")
        backbone = SAM_SCALES[scale]
    if config.get("samkit_beit3") is not None:
        try:
            beit3 = Beit3Config(**config["samkit_beit3"])
        except TypeError as exc:
            raise CheckpointError(f"config.json: bad samkit_beit3 entry: {exc}") from None
        text_encoder: str | Beit3Config = beit3
        width = beit3.embed_dim
    else:
        text_encoder = config.get("mm_extractor_scale", "large")
        if text_encoder not in BEIT3_CONFIGS:
            raise CheckpointError(f"config.json: mm_extractor_scale {text_encoder!r} is not one of "
                                  f"{', '.join(BEIT3_CONFIGS)}")
        width = BEIT3_CONFIGS[text_encoder].embed_dim
    for key, want in (("hidden_size", width), ("out_dim", PROMPT_DIM)):
        if config.get(key, want) != want:
            raise CheckpointError(f"config.json: {key} is {config[key]}, but this layout needs {want}")
    return {"backbone": backbone, "text_encoder": text_encoder}


def evf_config(model: EvfSam, dtype: torch.dtype = torch.float32) -> dict:
    """config.json for ``model``: the released keys plus ``samkit_backbone`` (and ``samkit_beit3`` for
    a BEiT-3 that is neither base nor large)."""
    cfg = model.beit3.cfg
    scale = next((name for name, c in BEIT3_CONFIGS.items() if c == cfg), None)
    config: dict = {"architectures": ["EvfSamModel"], "model_type": "evf", "hidden_size": cfg.embed_dim,
                    "out_dim": PROMPT_DIM, "torch_dtype": str(dtype).removeprefix("torch."),
                    "samkit_backbone": model.backbone}
    sam_scale = next((s for s, name in SAM_SCALES.items() if name == model.backbone), None)
    if sam_scale is not None:
        config["sam_scale"] = sam_scale
    if scale is not None:
        config["mm_extractor_scale"] = scale
    else:
        config["samkit_beit3"] = dataclasses.asdict(cfg)
    return config


def load_evf_directory(directory: str | os.PathLike, builder: Callable[..., nn.Module], **overrides: object) -> EvfSam:
    """Build the layout ``directory``'s config.json describes (``overrides`` win), load its weights
    strictly (fp16 or fp32 on disk, fp32 in the model) and its sentencepiece tokenizer when present."""
    options = {**build_options(read_config(directory)), **overrides}
    state = load_directory_weights(directory)
    with torch.device("meta"):  # no random init of ~1B parameters that the checkpoint replaces
        model = _evf(builder(**options), directory)
    load_weights(model, state, model.arch, assign=True)
    if any(t.is_meta for t in model.buffers()):  # buffers outside the state dict (TinyViT): build for real
        model = _evf(builder(**options), directory)
        load_weights(model, state, model.arch)
    tokenizer = tokenizer_file(directory)
    model.tokenizer = XlmrTokenizer(tokenizer) if tokenizer is not None else None
    return model


def _evf(model: nn.Module, directory: str | os.PathLike) -> EvfSam:
    if not isinstance(model, EvfSam):
        raise CheckpointError(f"{os.fspath(directory)}: a checkpoint directory holds an EVF-SAM model, "
                              f"not a {type(model).__name__}")
    return model


def save_evf_directory(model: EvfSam, directory: str | os.PathLike, *, safetensors: bool = True,
                       dtype: torch.dtype = torch.float32, max_shard_bytes: int | None = None) -> Path:
    """Write ``model`` as a checkpoint directory :func:`load_evf_directory` reads (tokenizer included)."""
    kwargs = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
    return save_directory(model.state_dict(), evf_config(model, dtype), directory, safetensors=safetensors,
                          dtype=dtype, tokenizer=None if model.tokenizer is None else model.tokenizer.path, **kwargs)
