"""Dataset readers: every reader yields :class:`~samkit.data.sample.Sample` objects.

Layouts (see :func:`open_dataset` for the kind names; :mod:`samkit.data.readers.base` for what every
reader shares):

* ``GrabCutDataset``  ``data_GT/<name>.<img>`` + ``boundary_GT/<name>.bmp`` (>128 object, 128 ignore)
* ``BerkeleyDataset`` ``images/<name>.jpg`` + ``masks/<name>.png`` (>0 object)
* ``DavisDataset``    ``img/<name>.jpg`` + ``gt/<name>.png`` (>0 object)
* ``BSDS500Dataset``  ``images/<split>/<id>.jpg`` + ``groundTruth/<split>/<id>.mat``
* ``CocoDataset``     a COCO instances JSON + the folder its ``file_name`` entries are relative to
* ``YoloSegDataset``  ``images/.../<stem>.jpg`` + ``labels/.../<stem>.txt`` (normalised polygons)
* ``Sa1bDataset``     ``<stem>.jpg`` + ``<stem>.json`` (SA-1B per-image annotation files)

Readers defined elsewhere register their kinds with :func:`register_dataset` when their module is
imported (``import samkit.data`` imports them all):

* ``PasteScenes``   (kind ``paste``) synthetic scenes, :mod:`samkit.data.synthetic`
* ``RefDataset``    (kind ``refer``) referring expressions, :mod:`samkit.data.refer`
* ``ReferScenes``   (kind ``refer_scenes``) synthetic referring scenes, :mod:`samkit.data.refer_scenes`
"""
from samkit.data.readers.base import (
    IMAGE_EXTENSIONS,
    DatasetError,
    DatasetReader,
    DatasetWarning,
    dataset_kinds,
    open_dataset,
    register_dataset,
)
from samkit.data.readers.bsds import (
    BSDS_SPLITS,
    BSDS500Dataset,
    evaluation_image_ids,
    read_bsds_boundaries,
)
from samkit.data.readers.coco import CocoDataset
from samkit.data.readers.ritm import BerkeleyDataset, DavisDataset, GrabCutDataset
from samkit.data.readers.sa1b import Sa1bDataset
from samkit.data.readers.yolo import YoloSegDataset

__all__ = [
    "BSDS_SPLITS",
    "IMAGE_EXTENSIONS",
    "BSDS500Dataset",
    "BerkeleyDataset",
    "CocoDataset",
    "DatasetError",
    "DatasetReader",
    "DatasetWarning",
    "DavisDataset",
    "GrabCutDataset",
    "Sa1bDataset",
    "YoloSegDataset",
    "dataset_kinds",
    "evaluation_image_ids",
    "open_dataset",
    "read_bsds_boundaries",
    "register_dataset",
]
