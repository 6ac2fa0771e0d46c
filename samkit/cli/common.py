"""What several commands share: the model to load (--model/--checkpoint/--device/--threads), output folders
that describe one run, and progress lines for logs."""
from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from samkit.data.staging import require_writable
from samkit.errors import CheckpointError, SamkitError
from samkit.export.onnx import cached_export
from samkit.models.load import load_model
from samkit.models.registry import REGISTRY, resolve_name
from samkit.predict.onnx_runtime import OnnxPredictor
from samkit.predict.predictor import Predictor
from samkit.refine.file import load_refiner

DEFAULT_MODEL = "samkit_tiny"  # `segment` / `embed` / `eval` / `everything` without --model or --checkpoint
DEFAULT_TEXT_MODEL = "samkit_tiny_text"  # `segment --text` / `eval refer` without a model: the bundled text model
DEFAULT_REFINER = "samkit_tiny_ref"  # `segment --refine` without a name: the bundled refiner of samkit_tiny


@dataclass(frozen=True)
class ModelChoice:
    """--model / --checkpoint / --device / --runtime / --precision as given (None = not given)."""

    name: str | None = None
    checkpoint: str | None = None
    device: str = "cpu"
    runtime: str = "torch"
    precision: str = "fp32"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelChoice:
        return cls(args.model, args.checkpoint, getattr(args, "device", "cpu"), getattr(args, "runtime", "torch"),
                   getattr(args, "precision", "fp32"))

    def model_or_checkpoint(self, default: str) -> tuple[str, str | None]:
        """(name or path, checkpoint) as :func:`samkit.load_model` takes them."""
        if self.checkpoint is None:
            return self.name or default, None
        if not Path(self.checkpoint).exists():  # a file, or a Hugging Face-format directory (EVF-SAM)
            raise CheckpointError(f"checkpoint not found: {self.checkpoint}")
        recorded = checkpoint_arch(self.checkpoint)
        if self.name is not None and recorded is not None and _registry_name(self.name) not in (None, recorded):
            raise CheckpointError(f"--checkpoint {self.checkpoint} is a `{recorded}` file (its metadata says so), "
                                  f"not `{self.name}`: use --model {recorded}, or leave --model out")
        name = self.name or recorded
        return (self.checkpoint, None) if name is None else (name, self.checkpoint)


def _registry_name(name: str) -> str | None:
    """The registry name of a model name or alias; None when unknown (load_model then names the known ones)."""
    try:
        return resolve_name(name).name
    except KeyError:
        return None


def checkpoint_arch(path: str | os.PathLike) -> str | None:
    """The registry architecture a samkit ``.safetensors`` file records in its metadata (``arch``), else None."""
    if Path(path).is_dir() or not os.fspath(path).endswith(".safetensors"):
        return None
    try:
        with safe_open(os.fspath(path), "pt") as f:
            arch = (f.metadata() or {}).get("arch")
    except (SafetensorError, OSError):
        return None  # load_model gives the precise error
    return arch if arch in REGISTRY else None


def setup_runtime(args: argparse.Namespace) -> None:
    """Apply --threads and check --device before anything slow runs."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = getattr(args, "device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SamkitError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise SamkitError("--device mps: Apple's MPS backend is not available here; use --device cpu")


def load_predictor(choice: ModelChoice, default: str) -> Predictor:
    """A predictor for --model / --checkpoint (``default`` when neither is given) on --device, or on
    ONNX Runtime (--runtime onnxruntime, --precision)."""
    source, checkpoint = choice.model_or_checkpoint(default)
    if choice.runtime == "onnxruntime":
        return OnnxPredictor(cached_export(source, checkpoint), precision=choice.precision)
    if choice.precision != "fp32":
        raise SamkitError(f"--precision {choice.precision} needs --runtime onnxruntime")
    return Predictor(load_model(source, checkpoint=checkpoint, device=choice.device))


def with_refiner(predictor: Predictor | OnnxPredictor, refiner: str | None,
                 mirror: bool = False) -> Predictor | OnnxPredictor:
    """``predictor`` with the SAM-REF refiner ``refiner`` (a bundled name or a file; None: none) and, with
    ``mirror``, the test-time mirror ensemble (``Predictor(mirror=True)``); neither: unchanged. Raises a
    CheckpointError when the refiner is missing, unreadable or made for another model."""
    if refiner is None and not mirror:
        return predictor
    if isinstance(predictor, OnnxPredictor):
        what = "a refiner" if refiner is not None else "--mirror"
        raise SamkitError(f"{what} runs behind the torch runtime: drop --runtime onnxruntime")
    return Predictor(predictor.model, refiner=None if refiner is None else load_refiner(refiner),
                     threads=predictor.threads, mirror=mirror)


# ----------------------------------------------------------------------------------------- out folders


def check_writable(out: Path, what: str = "--out") -> None:
    """Fail now (before any model runs) unless ``out`` is, or can be created as, a writable folder."""
    require_writable(out, what)


def earlier_outputs(out: Path, patterns: Iterable[str]) -> list[Path]:
    """What an earlier run left directly in ``out``: entries whose names match ``patterns``, and folders
    holding a ``masks.json`` (``segment --prompts`` writes one such folder per image)."""
    if not out.is_dir():
        return []
    pats = list(patterns)
    return sorted(p for p in out.iterdir()
                  if any(fnmatch.fnmatch(p.name, pat) for pat in pats) or (p / "masks.json").is_file())


def claim_out(out: Path, patterns: Iterable[str], overwrite: bool) -> list[Path]:
    """Check ``out`` before a run: writable, and holding no earlier run's outputs (:func:`earlier_outputs`)
    unless ``overwrite``. Returns the earlier outputs, to remove once the new run has its own."""
    check_writable(out)
    found = earlier_outputs(out, patterns)
    if found and not overwrite:
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise SamkitError(f"--out {out} holds the outputs of an earlier run ({names}); pass --overwrite to "
                          "replace them, or choose another folder")
    return found


def remove_stale(found: Iterable[Path], written: set[str]) -> None:
    """Delete the earlier run's outputs that the new run did not replace (names not in ``written``)."""
    for path in found:
        if path.name in written:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- progress


def logs_lines() -> bool:
    """True when stderr is not a terminal (a log file, CI): print a line per step instead of a bar."""
    return not sys.stderr.isatty()


class LineLog:
    """One stderr line per finished step (``[i/n] <text> (<seconds> s, elapsed <total> s)``), for logs."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.t0 = label, total, 0, time.perf_counter()

    def __call__(self, text: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        print(f"{self.label}: [{self.done}/{self.total}] {text} (elapsed {elapsed:.1f} s)", file=sys.stderr,
              flush=True)
