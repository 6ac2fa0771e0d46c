"""samkit: promptable image segmentation in the Segment Anything family.

The public API, from the top::

    model = samkit.load_model("samkit_tiny")           # list_models() for the names
    pred = samkit.Predictor(model); pred.set_image(rgb); out = pred.predict(points=[[x, y]], labels=[1])
    masks = samkit.AutomaticMaskGenerator(model).generate(rgb)      # segment everything
    data = samkit.open_dataset("grabcut", "path/to/GrabCut")       # dataset_kinds() for the kinds
    results = samkit.evaluate_interactive(pred, data)              # and evaluate_single_point, ...

The names are imported on first use (PEP 562 ``__getattr__``), so that ``import samkit`` (and
``samkit --help``) does not pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from samkit.errors import CheckpointError, DownloadError, ImageError, PromptError, SamkitError
from samkit.runtime import tune_openmp

tune_openmp()  # before anything imports torch: see samkit.runtime

__version__ = "0.2.0.dev0"  # the one version source (pyproject reads it)

_LAZY = {
    # models
    "load_model": "samkit.models.load", "list_models": "samkit.models.registry", "load_refiner": "samkit.refine.file",
    # prediction
    "Prediction": "samkit.predict.predictor", "Predictor": "samkit.predict.predictor",
    "AutomaticMaskGenerator": "samkit.predict.everything", "EverythingSettings": "samkit.predict.everything",
    "OnnxPredictor": "samkit.predict.onnx_runtime",  # ONNX Runtime (samkit[onnx])
    # export
    "export_onnx": "samkit.export.onnx",
    # data
    "open_dataset": "samkit.data.readers", "dataset_kinds": "samkit.data.readers",
    "DatasetError": "samkit.data.readers",
    # evaluation: one protocol each, any Segmenter (set_image / predict)
    "Segmenter": "samkit.eval.protocol", "evaluate_interactive": "samkit.eval",
    "evaluate_single_point": "samkit.eval", "evaluate_boxes": "samkit.eval", "evaluate_edges": "samkit.eval",
    "evaluate_refer": "samkit.eval", "write_report": "samkit.eval",
}

if TYPE_CHECKING:
    from samkit.data.readers import DatasetError, dataset_kinds, open_dataset
    from samkit.eval import (
        evaluate_boxes,
        evaluate_edges,
        evaluate_interactive,
        evaluate_refer,
        evaluate_single_point,
        write_report,
    )
    from samkit.eval.protocol import Segmenter
    from samkit.export.onnx import export_onnx
    from samkit.models.load import load_model
    from samkit.models.registry import list_models
    from samkit.predict.everything import AutomaticMaskGenerator, EverythingSettings
    from samkit.predict.onnx_runtime import OnnxPredictor
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
    "AutomaticMaskGenerator", "CheckpointError", "DatasetError", "DownloadError", "EverythingSettings", "ImageError",
    "OnnxPredictor", "Prediction", "Predictor", "PromptError", "SamkitError", "Segmenter", "__version__",
    "dataset_kinds",
    "evaluate_boxes", "evaluate_edges", "evaluate_interactive", "evaluate_refer", "evaluate_single_point",
    "export_onnx", "list_models", "load_model", "load_refiner", "open_dataset", "write_report",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
