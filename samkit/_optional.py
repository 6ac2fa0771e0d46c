"""Optional dependencies: import one by name, or fail with one line naming the samkit extra that installs it.

The core install (``pip install samkit``) is what prediction needs; the rest comes with extras::

    eval  scipy, matplotlib   benchmarks (BSDS boundaries, calibration), plots
    text  sentencepiece       text prompts (EVF-SAM, samkit_tiny_text) and text training
    ray   ray                 the Ray engine of segment-everything
    onnx  onnx, onnxruntime   ONNX export and inference
    yaml  pyyaml              YAML training configs
"""
from __future__ import annotations

import importlib
from types import ModuleType

from samkit.errors import SamkitError


class MissingDependencyError(SamkitError, ImportError):
    """An optional dependency is not installed (the message names the ``pip install`` that fixes it)."""


def install_hint(extra: str) -> str:
    """The command that installs a samkit extra."""
    return f"pip install 'samkit[{extra}]'"


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` (a dotted name); when its package is missing, MissingDependencyError with one line
    naming the extra (``purpose``: what needs it, for the message)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise  # the package is there but broken (one of its own imports failed): show the real error
        needs = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(f"{top} is not installed{needs}: {install_hint(extra)}") from None
