"""Checkpoints: resumable, verified downloads; loading state dicts with readable errors; architecture checks."""
from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import torch
from safetensors.torch import load_file as load_safetensors
from torch import nn
from tqdm import tqdm

from samkit.errors import CheckpointError, DownloadError

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
_SHOWN = 5  # entries listed per category in a load_weights error

_SAM_BY_DEPTH = {12: "sam_vit_b", 24: "sam_vit_l", 32: "sam_vit_h"}
_SAM_BY_WIDTH = {768: "sam_vit_b", 1024: "sam_vit_l", 1280: "sam_vit_h"}


def cache_dir() -> Path:
    """Where checkpoints are cached: ``$SAMKIT_HOME`` or ``~/.cache/samkit`` (created on demand)."""
    root = Path(os.environ.get("SAMKIT_HOME") or Path.home() / ".cache" / "samkit").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


# ---------------------------------------------------------------------------------------------- download


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5_prefix: str | None = None,
    expected_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` via ``<dest>.part`` (resumed if present), verify it, then move it into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        _fetch(url, part, progress)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError/HTTPError/timeouts/resets: OSError
        raise DownloadError(_network_message(url, dest, part, exc)) from exc
    _verify(part, url, sha256=sha256, md5_prefix=md5_prefix, expected_size=expected_size)
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, progress: bool) -> None:
    """Stream ``url`` into ``part``, appending when the server honours a resume request."""
    offset = part.stat().st_size if part.exists() else 0
    response, start = _open(url, offset)
    with response, open(part, "ab" if start else "wb") as out:
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        done = start
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), disable=None if progress else True)
        with bar:
            while chunk := response.read1(CHUNK_BYTES):  # whatever has arrived, so a stall loses nothing
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
    if total is not None and done < total:
        raise ConnectionError(f"connection closed after {done} of {total} bytes")


def _open(url: str, offset: int) -> tuple[http.client.HTTPResponse, int]:
    """Open ``url`` asking for bytes from ``offset`` on; returns the response and where its body starts."""
    headers = {"User-Agent": "samkit", "Range": f"bytes={offset}-"} if offset else {"User-Agent": "samkit"}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part is not a prefix the server can continue: start over
            exc.close()
            return _open(url, 0)
        raise
    if response.status != 206:  # 200: the server ignored the range and sends the whole file
        return response, 0
    if offset and _range_start(response) != offset:
        response.close()
        return _open(url, 0)
    return response, offset


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """First byte position of a 206 response (``Content-Range: bytes START-END/TOTAL``)."""
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _verify(part: Path, url: str, *, sha256: str | None, md5_prefix: str | None, expected_size: int | None) -> None:
    """Check size and digests of the finished ``part``; delete it and raise DownloadError on a mismatch."""
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        _reject(part, url, f"size is {size} bytes, expected {expected_size}")
    if sha256 is None and md5_prefix is None:
        return
    sha, md5 = _digests(part)
    if sha256 is not None and sha != sha256.lower():
        _reject(part, url, f"sha256 is {sha}, expected {sha256.lower()}")
    if md5_prefix is not None and not md5.startswith(md5_prefix.lower()):
        _reject(part, url, f"md5 is {md5}, expected it to start with {md5_prefix.lower()}")


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) hex digests of a file."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _reject(part: Path, url: str, problem: str) -> NoReturn:
    part.unlink(missing_ok=True)
    raise DownloadError(f"download of {url} failed verification: {problem}; the partial file was deleted")


def _network_message(url: str, dest: Path, part: Path, exc: BaseException) -> str:
    """One paragraph: what failed, why, and where to put the file by hand."""
    size = part.stat().st_size if part.exists() else 0
    kept = f" {size} bytes received so far are kept in {part} and the next try resumes from there." if size else ""
    return (f"could not download {url}: {_reason(exc)}.{kept} If this machine is offline or the URL is blocked, "
            f"download the file elsewhere and put it at {dest}.")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


# ----------------------------------------------------------------------------------------------- loading


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or PyTorch checkpoint as a flat ``{name: tensor}`` dict on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    with open(path, "rb") as f:  # surfaces permission errors before the loaders obscure them
        head = f.read(8)
    try:
        obj = _read(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_unpickling_message(path, head, exc)) from exc
    except Exception as exc:  # torch.load / safetensors raise many types on corrupt input
        raise CheckpointError(_unreadable_message(path, head, exc)) from exc
    return _as_tensor_dict(_unwrap(obj), path)


def _read(path: Path) -> object:
    if path.suffix == ".safetensors":
        return load_safetensors(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _unpickling_message(path: Path, head: bytes, exc: pickle.UnpicklingError) -> str:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if found is None:
        return _unreadable_message(path, head, exc)
    return (f"{path} holds Python objects besides tensors ({found.group(1)}), which samkit does not unpickle "
            "(torch.load weights_only=True); re-save only the state dict, e.g. torch.save(ckpt['model'], ...)")


def _unreadable_message(path: Path, head: bytes, exc: BaseException) -> str:
    if path.suffix == ".safetensors":
        return f"{path} is not a readable safetensors file (truncated or not a safetensors file): {exc}"
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        reason = "the zip archive has no central directory, so the file was cut short"
    elif not head.startswith((b"PK", b"\x80")):
        reason = f"it starts with {head!r}, neither a zip archive nor a pickle"
    else:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return f"{path} is not a readable PyTorch checkpoint (truncated or not a checkpoint file): {reason}"


def _unwrap(obj: object) -> object:
    """Descend into ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers that training checkpoints use."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return obj


def _as_tensor_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} is not a state dict: it holds a {type(obj).__name__}, not a mapping of tensors")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{path} is not a state dict of tensors: {len(bad)} entries are not "
                              f"name -> tensor, e.g. {bad[0]!r} ({type(obj[bad[0]]).__name__})")
    return dict(obj)


# ----------------------------------------------------------------------------------- architecture checks


def guess_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """Registry name of the architecture ``state`` belongs to, judged from its keys and shapes, or None."""
    keys = list(state)
    if any(k.startswith(("mm_extractor.beit3.", "visual_model.")) for k in keys):
        return "evf_sam"
    if any(k.startswith("image_encoder.layers.") and k.endswith(".conv1.c.weight") for k in keys):
        return "mobile_sam"
    depth = len({m.group(1) for k in keys if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    patch = state.get("image_encoder.patch_embed.proj.weight")
    width = int(patch.shape[0]) if patch is not None else None
    names = {_SAM_BY_DEPTH.get(depth), _SAM_BY_WIDTH.get(width) if width is not None else None} - {None}
    return names.pop() if len(names) == 1 else None


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str, assign: bool = False) -> None:
    """Strictly load ``state`` into ``model``, casting floating tensors to the model's dtypes.
    ``assign``: the (cast) tensors become the parameters, e.g. for a model built on the meta device.

    Raises CheckpointError listing missing/unexpected/mis-shaped keys (and the likely right architecture).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(_misfit_message(arch, state, missing, unexpected, mismatched))
    model.load_state_dict({k: _cast(v, expected[k]) for k, v in state.items()}, strict=True, assign=assign)


def _cast(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if value.is_floating_point() and target.is_floating_point():
        return value.to(target.dtype)
    return value


def _misfit_message(arch: str, state: Mapping[str, torch.Tensor], missing: list[str],
                    unexpected: list[str], mismatched: list[str]) -> str:
    categories = ((missing, "missing keys"), (unexpected, "unexpected keys"),
                  (mismatched, "shape mismatches"))
    parts = [_listing(items, what) for items, what in categories if items]
    message = f"checkpoint does not fit `{arch}`: " + "; ".join(parts)
    guess = guess_architecture(state)
    if guess is not None and guess != arch and not (guess == "evf_sam" and arch.startswith("evf_sam")):
        message += (f". This looks like a `{guess}` checkpoint: use --model {guess} / "
                    f"load_model('{guess}', checkpoint=...)")
    if guess == "evf_sam":
        inner = guess_architecture({k.removeprefix("visual_model."): v for k, v in state.items()
                                    if k.startswith("visual_model.")})
        if inner is not None:
            message += f". Its SAM looks like `{inner}` (load_model(..., backbone='{inner}'))"
    return message


def _listing(items: list[str], what: str) -> str:
    more = ", ..." if len(items) > _SHOWN else ""
    return f"{len(items)} {what} ({', '.join(items[:_SHOWN])}{more})"
