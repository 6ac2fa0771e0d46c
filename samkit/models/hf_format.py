"""Hugging Face-format checkpoint directories: ``config.json``, weights as ``model.safetensors`` or
``pytorch_model.bin`` (whole, or sharded with a ``*.index.json``), and a tokenizer model file.
Reading, writing, and fetching them from a Hugging Face model repository."""
from __future__ import annotations

import json
import os
import urllib.error
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from samkit.errors import CheckpointError, DownloadError
from samkit.models.hub import download, load_state_dict_file

CONFIG = "config.json"
# Weight files in order of preference: safetensors before pickles, an index before a single file.
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")
TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer.model", "beit3.spm")
DEFAULT_SHARD_BYTES = 2 * 1024**3


def read_config(directory: str | os.PathLike) -> dict:
    """The directory's config.json as a dict; CheckpointError when it is missing or not a JSON object."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a Hugging Face-format checkpoint directory: no {CONFIG} "
                              f"(expected {CONFIG}, {' or '.join(WEIGHT_FILES[1::2])} and {TOKENIZER_FILES[0]})")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(config).__name__}")
    return config


def weight_files(directory: str | os.PathLike) -> list[Path]:
    """The files holding the directory's weights (the shards named by an index, or one file)."""
    return _resolve(directory)[0]


def _resolve(directory: str | os.PathLike) -> tuple[list[Path], dict[str, str] | None]:
    """Weight files, and the index's weight map when the weights are sharded."""
    root = Path(directory)
    for name in WEIGHT_FILES:
        path = root / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path], None
        mapping = _weight_map(path)
        shards = sorted(set(mapping.values()))
        missing = [s for s in shards if not (root / s).is_file()]
        if missing:
            raise CheckpointError(f"{path} names {len(shards)} shard(s), but {len(missing)} are missing from "
                                  f"{root}: {', '.join(missing[:5])}")
        return [root / s for s in shards], mapping
    raise CheckpointError(f"no weights in {root}: expected one of {', '.join(WEIGHT_FILES)}")


def _weight_map(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text())
        mapping = data["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index} is not a shard index (a JSON object with a weight_map): {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise CheckpointError(f"{index}: weight_map must map parameter names to file names")
    if any(Path(v).name != v for v in mapping.values()):
        raise CheckpointError(f"{index}: shard names must be plain file names in the same directory")
    return mapping


def load_directory_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All weights of a checkpoint directory as one ``{name: tensor}`` dict (dtypes as stored)."""
    files, mapping = _resolve(directory)
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = load_state_dict_file(path)
        clash = state.keys() & part.keys()
        if clash:
            raise CheckpointError(f"{path} repeats {len(clash)} tensor(s) of another shard, e.g. {min(clash)}")
        state.update(part)
    absent = sorted(mapping.keys() - state.keys()) if mapping is not None else []
    if absent:
        raise CheckpointError(f"the shard index of {directory} lists {len(absent)} tensor(s) that no shard holds, "
                              f"e.g. {absent[0]}")
    return state


def tokenizer_file(directory: str | os.PathLike) -> Path | None:
    """The directory's sentencepiece model file, or None."""
    return next((p for n in TOKENIZER_FILES if (p := Path(directory) / n).is_file()), None)


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a config and all its weight files."""
    try:
        read_config(directory)
        weight_files(directory)
    except CheckpointError:
        return False
    return True


def save_directory(state: Mapping[str, torch.Tensor], config: Mapping, directory: str | os.PathLike, *,
                   safetensors: bool = True, dtype: torch.dtype | None = None,
                   max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                   tokenizer: str | os.PathLike | None = None) -> Path:
    """Write ``state`` (cast to ``dtype`` when given) and ``config`` as a Hugging Face-format directory:
    one weight file, or shards of at most ``max_shard_bytes`` with an index; ``tokenizer`` is copied in."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state.items()}
    shards = _split(tensors, max_shard_bytes)
    stem, ext = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    names = ([f"{stem}.{ext}"] if len(shards) == 1 else
             [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))])
    for name, shard in zip(names, shards, strict=False):
        _write(shard, root / name, safetensors)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards, strict=False) for k in shard}}
        (root / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=1) + "\n")
    (root / CONFIG).write_text(json.dumps(dict(config), indent=2) + "\n")
    if tokenizer is not None:
        (root / TOKENIZER_FILES[0]).write_bytes(Path(tokenizer).read_bytes())
    return root


def _split(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    return shards


def _write(shard: dict[str, torch.Tensor], path: Path, safetensors: bool) -> None:
    if safetensors:
        save_file(shard, str(path), metadata={"format": "pt"})
    else:
        torch.save(shard, path)


def fetch_directory(repo_url: str, dest: str | os.PathLike, progress: bool = True) -> Path:
    """Download a Hugging Face model repository's checkpoint files into ``dest``: config.json, the weights
    (the first of :data:`WEIGHT_FILES` the repository has, with its shards) and the tokenizer model.
    ``repo_url`` is the repository's page (``https://huggingface.co/OWNER/NAME``). Files already in
    ``dest`` are kept; an interrupted file resumes."""
    root = Path(dest)
    base = repo_url.rstrip("/")

    def get(name: str, required: bool) -> bool:
        if (root / name).is_file():
            return True
        try:
            download(f"{base}/resolve/main/{name}", root / name, progress=progress)
        except DownloadError as exc:
            if not required and _not_found(exc):
                return False
            raise DownloadError(f"{exc} {_by_hand(base, root)}") from exc
        return True

    get(CONFIG, required=True)
    weights = next((name for name in WEIGHT_FILES if get(name, required=False)), None)
    if weights is None:
        raise DownloadError(f"{base} has none of {', '.join(WEIGHT_FILES)}")
    if weights.endswith(".index.json"):
        for shard in sorted(set(_weight_map(root / weights).values())):
            get(shard, required=True)
    next((name for name in TOKENIZER_FILES if get(name, required=False)), None)
    return root


def _not_found(exc: DownloadError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, urllib.error.HTTPError) and cause.code == 404


def _by_hand(base: str, root: Path) -> str:
    return (f"This model is a folder of files: from {base}/tree/main put {CONFIG}, the weights "
            f"({' or '.join(WEIGHT_FILES[1::2])}, with their shards and index if sharded) and "
            f"{TOKENIZER_FILES[0]} into {root}, or pass checkpoint=DIR / --checkpoint DIR.")
