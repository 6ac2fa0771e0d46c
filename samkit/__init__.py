"""samkit: promptable image segmentation in the Segment Anything family."""
from samkit.errors import CheckpointError, DownloadError, ImageError, PromptError, SamkitError
from samkit.models.load import load_model
from samkit.models.registry import list_models
from samkit.predict.predictor import Prediction, Predictor

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DownloadError", "ImageError", "Prediction", "Predictor", "PromptError", "SamkitError",
    "__version__", "list_models", "load_model",
]
