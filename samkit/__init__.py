"""samkit: promptable image segmentation in the Segment Anything family.

The model and predictor names are imported on first use (PEP 562 ``__getattr__``), so that
``import samkit`` (and ``samkit --help``) does not pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from samkit.errors import CheckpointError, DownloadError, ImageError, PromptError, SamkitError

__version__ = "0.1.0"

_LAZY = {"load_model": "samkit.models.load", "list_models": "samkit.models.registry",
         "Prediction": "samkit.predict.predictor", "Predictor": "samkit.predict.predictor",
         "load_refiner": "samkit.refine.file"}

if TYPE_CHECKING:
    from samkit.models.load import load_model
    from samkit.models.registry import list_models
    from samkit.predict.predictor import Prediction, Predictor
    from samkit.refine.file import load_refiner


def __getattr__(name: str) -> Any:
    """Import the torch-backed public names (``_LAZY``) when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'samkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "CheckpointError", "DownloadError", "ImageError", "Prediction", "Predictor", "PromptError", "SamkitError",
    "__version__", "list_models", "load_model", "load_refiner",
]
