"""Images, masks, sample containers, dataset readers and mask-format writers.

Importing this package imports every reader module, so each dataset kind is registered with
:func:`samkit.data.readers.open_dataset` (the paste and referring readers register themselves).
"""
from samkit.data import refer, refer_scenes, synthetic  # noqa: F401  (register the paste / refer kinds)
from samkit.data.readers import DatasetError, dataset_kinds, open_dataset

__all__ = ["DatasetError", "dataset_kinds", "open_dataset"]
