"""SAM-REF refinement during interaction (arXiv 2408.11535): a small early-fusion refiner behind a frozen SAM.

``samkit.load_refiner(name_or_path)`` gives a :class:`SamRefiner`; ``samkit.Predictor(model, refiner=...)``
runs it on each prompt (``predict(..., refine=True|False)``). Layout: :mod:`~samkit.refine.global_refiner`,
:mod:`~samkit.refine.local_refiner` (+ :mod:`~samkit.refine.crops`), :mod:`~samkit.refine.selector`,
:mod:`~samkit.refine.refiner` (the per-image cache and per-click pipeline), :mod:`~samkit.refine.file`.
"""
from samkit.refine.config import RefinerConfig
from samkit.refine.file import BUNDLED_REFINERS, load_refiner, read_refiner_file, save_refiner
from samkit.refine.refiner import SamRefiner

__all__ = ["BUNDLED_REFINERS", "RefinerConfig", "SamRefiner", "load_refiner", "read_refiner_file", "save_refiner"]
