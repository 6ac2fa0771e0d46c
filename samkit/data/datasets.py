"""Dataset readers: every reader yields :class:`~samkit.data.sample.Sample` objects.

Readers are small lazy sequences built from a folder (or an annotation file): construction only
lists and pairs files; images and annotations are decoded in ``__getitem__``. All readers share:

* ``len(ds)``, ``ds[i]`` (a ``Sample``), ``iter(ds)``, ``ds.names`` (sample ids, in order);
* ``ds.skipped``: ``(path, reason)`` for every file that could not be used. Pairing problems
  (an image without its mask, a label without its image) are found at construction; corrupt
  content (a truncated image, an unreadable ``.mat`` or label file) when the item is loaded.
  Each skipped item also emits a :class:`DatasetWarning`. ``ds[i]`` on a corrupt item raises
  :class:`DatasetError` (and records it); iterating skips it and carries on.

Layouts (see :func:`open_dataset` for the kind names):

* ``GrabCutDataset``  ``data_GT/<name>.<img>`` + ``boundary_GT/<name>.bmp`` (>128 object, 128 ignore)
* ``BerkeleyDataset`` ``images/<name>.jpg`` + ``masks/<name>.png`` (>0 object)
* ``DavisDataset``    ``img/<name>.jpg`` + ``gt/<name>.png`` (>0 object)
* ``BSDS500Dataset``  ``images/<split>/<id>.jpg`` + ``groundTruth/<split>/<id>.mat``
* ``CocoDataset``     a COCO instances JSON + the folder its ``file_name`` entries are relative to
* ``YoloSegDataset``  ``images/.../<stem>.jpg`` + ``labels/.../<stem>.txt`` (normalised polygons)
* ``Sa1bDataset``     ``<stem>.jpg`` + ``<stem>.json`` (SA-1B per-image annotation files)
* ``PasteScenes``     (kind ``paste``) synthetic scenes from a ``shared/data``-like folder, see
  :mod:`samkit.data.synthetic`
* ``RefDataset``    (kind ``refer``) referring expressions, one sample per expression, see
  :mod:`samkit.data.refer`
* ``ReferScenes``   (kind ``refer_scenes``) synthetic referring scenes on BSDS500 photos, see
  :mod:`samkit.data.refer_scenes`
"""
from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from samkit.data.image_io import load_image
from samkit.data.masks import rle_to_mask
from samkit.data.sample import Sample
from samkit.errors import ImageError, SamkitError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
BSDS_SPLITS = ("train", "val", "test")

# PIL modes whose pixel values are labels (palette indices, grey levels); others are colours.
_LABEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Errors raised by PIL / numpy / json for corrupt content.
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, KeyError, TypeError, IndexError)

T = TypeVar("T")


class DatasetError(SamkitError):
    """A dataset root has the wrong layout, or one of its files cannot be used (``path``, ``reason``)."""

    def __init__(self, message: str, path: str | Path | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = str(path) if path is not None else None
        self.reason = reason if reason is not None else message


class DatasetWarning(UserWarning):
    """A dataset file was skipped (the message names the path and the reason)."""


def _fail(path: str | Path, reason: str) -> NoReturn:
    """Raise a ``DatasetError`` for one unusable file."""
    raise DatasetError(f"{path}: {reason}", path=path, reason=reason)


# --------------------------------------------------------------------------------------------
# Base reader
# --------------------------------------------------------------------------------------------


class DatasetReader:
    """Lazy sequence of named items -> ``Sample``; subclasses fill ``_items`` and define ``_load``."""

    kind: ClassVar[str] = ""
    layout: ClassVar[str] = ""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.skipped: list[tuple[str, str]] = []
        self._items: list[tuple[str, Any]] = []

    @property
    def names(self) -> list[str]:
        """Sample ids in index order (items found at construction; corrupt ones show up on load)."""
        return [name for name, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        """Load sample ``index``; raises ``DatasetError`` (and records it in ``skipped``) if corrupt."""
        name, item = self._items[index]
        return self._guard(lambda: self._load(name, item))

    def __iter__(self) -> Iterator[Sample]:
        """Every loadable sample, in order; corrupt ones are recorded in ``skipped`` and left out."""
        for index in range(len(self)):
            try:
                yield self[index]
            except DatasetError:
                continue

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} samples, {len(self.skipped)} skipped)"

    def _load(self, name: str, item: Any) -> Sample:
        raise NotImplementedError

    def _guard(self, action: Callable[[], T]) -> T:
        """Run ``action``; a ``DatasetError`` naming a file is recorded as skipped, then re-raised."""
        try:
            return action()
        except DatasetError as exc:
            self._skip(exc.path or str(self.root), exc.reason)
            raise

    def _skip(self, path: str | Path, reason: str) -> None:
        """Record (once) and warn about an unusable file."""
        entry = (str(path), reason)
        if entry not in self.skipped:
            self.skipped.append(entry)
            warnings.warn(f"{type(self).__name__}: skipping {path}: {reason}", DatasetWarning, stacklevel=4)

    def _require_dir(self, relative: str | Path) -> Path:
        """``root / relative`` as an existing folder, else a ``DatasetError`` describing the layout."""
        if not self.root.is_dir():
            raise DatasetError(f"{self.kind} root not found or not a folder: {self.root}")
        folder = self.root / relative
        if not folder.is_dir():
            raise DatasetError(
                f"{self.root} does not look like a {self.kind} folder: missing {relative}/ "
                f"(expected {self.layout})"
            )
        return folder

    def _require_items(self) -> None:
        """Raise when construction found nothing usable (wrong folder, or everything broken)."""
        if not self._items:
            detail = f"; {len(self.skipped)} file(s) skipped" if self.skipped else ""
            raise DatasetError(
                f"no {self.kind} samples found in {self.root} (expected {self.layout}){detail}"
            )


# --------------------------------------------------------------------------------------------
# Shared file helpers
# --------------------------------------------------------------------------------------------


def _index_files(
    folder: Path, extensions: frozenset[str] | set[str]
) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """stem -> file for the files in ``folder`` with one of ``extensions`` (case-insensitive).

    Returns the index and ``(path, reason)`` for stems shared by several files (ambiguous: none used).
    """
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in extensions:
            by_stem[path.stem].append(path)
    index = {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}
    clashes = [
        (path, f"several files named {stem}.*: {', '.join(p.name for p in paths)}")
        for stem, paths in by_stem.items()
        if len(paths) > 1
        for path in paths
    ]
    return index, clashes


def _load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 image via ``load_image``; unreadable -> ``DatasetError`` naming ``path``."""
    try:
        return load_image(path)
    except ImageError as exc:
        _fail(path, str(exc))


def _read_label_map(path: Path) -> np.ndarray:
    """(H, W) label values of a mask image: palette indices / grey levels as stored, else the max
    over the colour channels (so any non-black colour is > 0). Not ``load_image``: that one maps
    palette indices to colours and scales 16-bit levels, which would change the labels."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _LABEL_MODES:
                return np.asarray(im)
            return np.asarray(im.convert("RGB")).max(axis=2)
    except _READ_ERRORS as exc:
        _fail(path, f"cannot read mask: {exc}")


def _read_json(path: Path) -> Any:
    """Parsed JSON file; unreadable or invalid -> ``DatasetError`` naming ``path``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        _fail(path, f"cannot read JSON: {exc}")


def _check_size(array: np.ndarray, image: np.ndarray, path: Path | str, what: str) -> None:
    """Fail when ``array``'s (H, W) differs from the image's."""
    if array.shape[:2] != image.shape[:2]:
        _fail(path, f"{what} is {array.shape[1]}x{array.shape[0]} but the image is "
                    f"{image.shape[1]}x{image.shape[0]}")


def _stack(masks: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """List of (H, W) bool masks -> (N, H, W) bool (N may be 0)."""
    if not masks:
        return np.zeros((0, height, width), dtype=bool)
    return np.stack(masks).astype(bool, copy=False)


def _polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons (flat ``[x0, y0, x1, y1, ...]`` pixel lists, one object) -> (H, W) bool.

    Rasterised with pycocotools (the COCO convention). Polygons with fewer than 3 points carry
    no area and are ignored (pycocotools would read a 4-number list as a box).
    """
    valid = []
    for polygon in polygons:
        if len(polygon) % 2:
            raise ValueError(f"polygon has an odd number of coordinates ({len(polygon)})")
        if len(polygon) >= 6:
            valid.append([float(v) for v in polygon])
    if not valid:
        return np.zeros((height, width), dtype=bool)
    rle = mask_utils.merge(mask_utils.frPyObjects(valid, height, width))
    return mask_utils.decode(rle).astype(bool)


# --------------------------------------------------------------------------------------------
# RITM folder layouts: GrabCut, Berkeley, DAVIS
# --------------------------------------------------------------------------------------------


class _ImageMaskFolder(DatasetReader):
    """One object per image: ``<root>/<image_dir>/<name>.*`` + ``<root>/<mask_dir>/<name>.*``.

    Each mask file is one sample (named by the mask stem); images without a mask and masks
    without an image are skipped at construction.
    """

    image_dir: ClassVar[str]
    mask_dir: ClassVar[str]

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        image_dir, mask_dir = self._require_dir(self.image_dir), self._require_dir(self.mask_dir)
        images, image_clashes = _index_files(image_dir, IMAGE_EXTENSIONS)
        masks, mask_clashes = _index_files(mask_dir, IMAGE_EXTENSIONS)
        for path, reason in image_clashes + mask_clashes:
            self._skip(path, reason)
        used: set[Path] = set()
        for stem, mask_path in sorted(masks.items()):
            image_path = self._image_for(stem, images)
            if image_path is None:
                self._skip(mask_path, f"no image {image_dir / stem}.* for this mask")
                continue
            used.add(image_path)
            self._items.append((stem, (image_path, mask_path)))
        for stem, image_path in sorted(images.items()):
            if image_path not in used:
                self._skip(image_path, f"no mask {mask_dir / stem}.* for this image")
        self._require_items()

    def _image_for(self, mask_stem: str, images: dict[str, Path]) -> Path | None:
        return images.get(mask_stem)

    def _decode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Label values (H, W) -> (object mask (H, W) bool, ignore (H, W) bool or None)."""
        return values > 0, None

    def _load(self, name: str, item: tuple[Path, Path]) -> Sample:
        image_path, mask_path = item
        image = _load_rgb(image_path)
        values = _read_label_map(mask_path)
        _check_size(values, image, mask_path, "mask")
        mask, ignore = self._decode(values)
        if not mask.any():
            _fail(mask_path, "mask has no object pixels")
        return Sample(name, image, mask[None], ignore, source=str(image_path),
                      extra={"mask_path": str(mask_path)})


class GrabCutDataset(_ImageMaskFolder):
    """GrabCut (50 images): ``data_GT/<name>.{jpg,bmp,JPG}`` + ``boundary_GT/<name>.bmp``.

    Mask values: >128 object (255), ==128 the unlabelled band -> ``ignore``, else background
    (RITM's rule). Samples: masks (1, H, W), ignore (H, W) bool.
    """

    kind = "GrabCut"
    layout = "data_GT/<name>.{jpg,bmp,...} + boundary_GT/<name>.bmp"
    image_dir = "data_GT"
    mask_dir = "boundary_GT"

    def _decode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return values > 128, values == 128


class BerkeleyDataset(_ImageMaskFolder):
    """Berkeley (100 masks on 96 BSDS photos): ``images/<name>.jpg`` + ``masks/<name>.png``, >0 object.

    Names are BSDS ids; extra objects of one photo carry a letter (``189011a``, ``189011b``).
    Their image is ``images/189011a.jpg`` when present (RITM's zip ships such copies), else
    ``images/189011.jpg``. Samples: masks (1, H, W), ignore None.
    """

    kind = "Berkeley"
    layout = "images/<name>.jpg + masks/<name>.png"
    image_dir = "images"
    mask_dir = "masks"

    def _image_for(self, mask_stem: str, images: dict[str, Path]) -> Path | None:
        return images.get(mask_stem) or images.get(_strip_object_suffix(mask_stem))


class DavisDataset(_ImageMaskFolder):
    """DAVIS as RITM packs it (345 frames): ``img/<name>.jpg`` + ``gt/<name>.png``, >0 object.

    Palette PNGs are read by index (all objects merged). Samples: masks (1, H, W), ignore None.
    """

    kind = "DAVIS"
    layout = "img/<name>.jpg + gt/<name>.png"
    image_dir = "img"
    mask_dir = "gt"


def _strip_object_suffix(stem: str) -> str:
    """``189011a`` -> ``189011`` (Berkeley's extra-object naming); other stems unchanged."""
    return re.sub(r"(?<=\d)[a-z]$", "", stem)


# --------------------------------------------------------------------------------------------
# BSDS500 and the never-train-on-eval rule
# --------------------------------------------------------------------------------------------


class BSDS500Dataset(DatasetReader):
    """BSDS500 ``images/<split>/<id>.jpg`` + ``groundTruth/<split>/<id>.mat`` (4-9 annotators).

    Every region (label value) of every annotator's ``Segmentation`` is one class-agnostic mask:
    masks (N, H, W) bool with ``extra["annotator"]`` (N,) int giving each mask's annotator and
    ``extra["num_annotators"]``. :meth:`boundaries` gives the human edge maps (A, H, W) bool.

    ``exclude_eval_overlap`` (default: True for train/val, False for test) drops the ids in
    :func:`evaluation_image_ids` (photos that are also GrabCut or Berkeley benchmark images),
    looked up in ``eval_data_root`` (default: the folder holding ``root``); dropped ids are in
    ``excluded``.
    """

    kind = "BSDS500"
    layout = "images/{train,val,test}/<id>.jpg + groundTruth/{train,val,test}/<id>.mat"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        exclude_eval_overlap: bool | None = None,
        eval_data_root: str | Path | None = None,
    ) -> None:
        super().__init__(root)
        if split not in BSDS_SPLITS:
            raise DatasetError(f"unknown BSDS500 split {split!r}: expected one of {', '.join(BSDS_SPLITS)}")
        self.split = split
        self.excluded: list[str] = []
        image_dir = self._require_dir(Path("images") / split)
        gt_dir = self._require_dir(Path("groundTruth") / split)
        self._pair(image_dir, gt_dir)
        if exclude_eval_overlap is None:
            exclude_eval_overlap = split != "test"
        if exclude_eval_overlap:
            self._exclude(evaluation_image_ids(eval_data_root or self.root.parent, bsds_root=self.root))
        self._require_items()

    def _pair(self, image_dir: Path, gt_dir: Path) -> None:
        images, image_clashes = _index_files(image_dir, IMAGE_EXTENSIONS)
        mats, mat_clashes = _index_files(gt_dir, {".mat"})
        for path, reason in image_clashes + mat_clashes:
            self._skip(path, reason)
        for stem, image_path in sorted(images.items()):
            if stem in mats:
                self._items.append((stem, (image_path, mats[stem])))
            else:
                self._skip(image_path, f"no ground truth {gt_dir / stem}.mat for this image")
        for stem, mat_path in sorted(mats.items()):
            if stem not in images:
                self._skip(mat_path, f"no image {image_dir / stem}.jpg for this ground truth")

    def _exclude(self, ids: set[str]) -> None:
        self.excluded = sorted(name for name, _ in self._items if name in ids)
        self._items = [(name, item) for name, item in self._items if name not in ids]

    def _load(self, name: str, item: tuple[Path, Path]) -> Sample:
        image_path, mat_path = item
        image = _load_rgb(image_path)
        masks, annotator = [], []
        annotations = _read_bsds_mat(mat_path)
        for index, (segmentation, _) in enumerate(annotations):
            _check_size(segmentation, image, mat_path, f"annotator {index}'s segmentation")
            labels = np.unique(segmentation)
            masks.append(segmentation[None] == labels[:, None, None])
            annotator.append(np.full(len(labels), index, dtype=np.int64))
        return Sample(name, image, np.concatenate(masks), None, source=str(image_path),
                      extra={"annotator": np.concatenate(annotator), "num_annotators": len(annotations),
                             "mat_path": str(mat_path)})

    def boundaries(self, index: int) -> np.ndarray:
        """Human boundary maps of sample ``index``: (A, H, W) bool, one per annotator."""
        _, (_, mat_path) = self._items[index]
        return self._guard(lambda: np.stack([edges > 0 for _, edges in _read_bsds_mat(mat_path)]))


def _read_bsds_mat(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(Segmentation (H, W) int, Boundaries (H, W))`` per annotator of a BSDS ``.mat`` file."""
    from scipy.io import loadmat  # imported here: only this reader needs it, and it is slow to import

    try:
        cells = loadmat(str(path), simplify_cells=True)["groundTruth"]
    except Exception as exc:  # loadmat raises many types for corrupt files
        _fail(path, f"cannot read BSDS ground truth: {type(exc).__name__}: {exc}")
    cells = [cells] if isinstance(cells, dict) else list(np.atleast_1d(cells))
    out = []
    for index, cell in enumerate(cells):
        try:
            segmentation, edges = np.asarray(cell["Segmentation"]), np.asarray(cell["Boundaries"])
        except _READ_ERRORS:
            _fail(path, f"annotator {index} has no Segmentation/Boundaries")
        if segmentation.ndim != 2 or segmentation.shape != edges.shape:
            _fail(path, f"annotator {index}: Segmentation {segmentation.shape} / Boundaries "
                        f"{edges.shape} are not matching 2-D maps")
        out.append((segmentation, edges))
    if not out:
        _fail(path, "no annotators in groundTruth")
    return out


def evaluation_image_ids(data_root: str | Path, bsds_root: str | Path | None = None) -> set[str]:
    """BSDS500 ids whose photo is also a GrabCut or Berkeley benchmark image: never train on them.

    ``data_root`` holds ``GrabCut/data_GT/``, ``Berkeley/images/`` and (unless ``bsds_root`` is
    given) ``BSDS500/`` with ``images/{train,val,test}/``. A benchmark
    image is a copy of a BSDS photo when both have the same size and their 1/8-scale thumbnails
    differ by < 6 grey levels on average (re-encoded copies still match; GrabCut ``124080``'s
    nearest other BSDS photo differs by 38). The BSDS id with the same name (less Berkeley's
    ``a``/``b`` suffix) is tried first, then every BSDS photo of that size, which finds renamed
    copies (GrabCut's ``124080`` is BSDS ``124084``). An unreadable benchmark image whose name is
    a BSDS id counts as a match (fail safe). Cached per folder pair.
    """
    data_root = Path(data_root).resolve()
    bsds_root = Path(bsds_root).resolve() if bsds_root is not None else data_root / "BSDS500"
    return set(_evaluation_image_ids(str(data_root), str(bsds_root)))


@lru_cache(maxsize=8)
def _evaluation_image_ids(data_root: str, bsds_root: str) -> frozenset[str]:
    root, bsds_images = Path(data_root), Path(bsds_root) / "images"
    if not bsds_images.is_dir():
        raise DatasetError(f"cannot find the BSDS500 images folder {bsds_images} to check the evaluation overlap")
    bench_dirs = [root / "GrabCut" / "data_GT", root / "Berkeley" / "images"]
    missing = [str(d) for d in bench_dirs if not d.is_dir()]
    if missing:
        raise DatasetError(
            f"cannot apply the never-train-on-eval rule: missing {', '.join(missing)}; pass "
            "eval_data_root=<folder with GrabCut/ and Berkeley/> or exclude_eval_overlap=False"
        )
    bsds = {p.stem: p for split in BSDS_SPLITS if (bsds_images / split).is_dir()
            for p in sorted((bsds_images / split).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    matcher = _PhotoMatcher(bsds)
    bench_images = [p for d in bench_dirs for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    return frozenset(filter(None, map(matcher.match, bench_images)))


class _PhotoMatcher:
    """Find the BSDS photo (by id) that an image is a copy of, comparing small thumbnails."""

    MAX_MEAN_ABS_DIFF = 6.0

    def __init__(self, bsds: dict[str, Path]) -> None:
        self.bsds = bsds
        self._sizes: dict[Path, tuple[int, int] | None] = {}
        self._thumbs: dict[Path, np.ndarray | None] = {}

    def match(self, path: Path) -> str | None:
        """BSDS id of the photo ``path`` shows, or None."""
        by_name = [c for c in dict.fromkeys([path.stem, _strip_object_suffix(path.stem)]) if c in self.bsds]
        size = self._size(path)
        if size is None or self._thumb(path) is None:
            return by_name[0] if by_name else None  # unreadable: trust the name (fail safe)
        for bsds_id in by_name + sorted(self.bsds):
            if self._same_photo(path, self.bsds[bsds_id], size):
                return bsds_id
        return None

    def _same_photo(self, path: Path, bsds_path: Path, size: tuple[int, int]) -> bool:
        if self._size(bsds_path) != size:
            return False
        a, b = self._thumb(path), self._thumb(bsds_path)
        return a is not None and b is not None and float(np.abs(a - b).mean()) < self.MAX_MEAN_ABS_DIFF

    def _size(self, path: Path) -> tuple[int, int] | None:
        if path not in self._sizes:
            try:
                with Image.open(path) as im:
                    self._sizes[path] = im.size
            except _READ_ERRORS:
                self._sizes[path] = None
        return self._sizes[path]

    def _thumb(self, path: Path) -> np.ndarray | None:
        """1/8-scale RGB thumbnail as float32 (JPEGs decoded at reduced scale: fast)."""
        if path not in self._thumbs:
            try:
                with Image.open(path) as im:
                    size = (max(1, im.size[0] // 8), max(1, im.size[1] // 8))
                    im.draft("RGB", size)
                    thumb = im.convert("RGB").resize(size, Image.Resampling.BILINEAR)
                    self._thumbs[path] = np.asarray(thumb, dtype=np.float32)
            except _READ_ERRORS:
                self._thumbs[path] = None
        return self._thumbs[path]


# --------------------------------------------------------------------------------------------
# COCO, YOLO-seg, SA-1B
# --------------------------------------------------------------------------------------------


class CocoDataset(DatasetReader):
    """COCO instances JSON: polygons, compressed and uncompressed RLE (rasterised by pycocotools).

    One sample per image record (named by the file stem), images at ``image_dir / file_name``
    (default: the JSON's folder). ``iscrowd=1`` annotations are OR-ed into ``ignore`` (None when
    there are none); the others become masks (N, H, W) with ``categories`` (N,) COCO category
    ids and ``extra["annotation_ids"]``. ``category_names`` maps category id -> name.
    """

    kind = "COCO"
    layout = "an instances JSON with images/annotations/categories"

    def __init__(self, annotation_json: str | Path, image_dir: str | Path | None = None) -> None:
        annotation_json = Path(annotation_json)
        super().__init__(image_dir if image_dir is not None else annotation_json.parent)
        self.annotation_json = annotation_json
        if not annotation_json.is_file():
            raise DatasetError(f"COCO annotation file not found: {annotation_json}")
        data = self._guard(lambda: _read_json(annotation_json))
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetError(f"{annotation_json} does not look like a COCO instances file: no 'images' list")
        categories = data.get("categories", [])
        self.category_names: dict[int, str] = {c["id"]: c.get("name", str(c["id"])) for c in categories}
        self._index(data["images"], data.get("annotations", []))
        self._require_items()

    def _index(self, images: list[dict], annotations: list[dict]) -> None:
        by_image: dict[Any, list[dict]] = defaultdict(list)
        for ann in annotations:
            by_image[ann.get("image_id")].append(ann)
        known = {record.get("id") for record in images}
        for image_id in sorted(set(by_image) - known, key=str):
            self._skip(f"{self.annotation_json} (image_id {image_id})",
                       f"{len(by_image[image_id])} annotation(s) refer to an image id with no image record")
        for record in sorted(images, key=lambda r: str(r.get("file_name"))):
            path = self.root / str(record.get("file_name"))
            if not path.is_file():
                self._skip(path, f"image file not found (image id {record.get('id')})")
                continue
            self._items.append((path.stem, (path, record, by_image.get(record.get("id"), []))))

    def _load(self, name: str, item: tuple[Path, dict, list[dict]]) -> Sample:
        path, record, annotations = item
        image = _load_rgb(path)
        height, width = image.shape[:2]
        if (record.get("height", height), record.get("width", width)) != (height, width):
            _fail(path, f"image is {width}x{height} but {self.annotation_json.name} says "
                        f"{record.get('width')}x{record.get('height')}")
        masks, categories, ids = [], [], []
        ignore = None
        for ann in annotations:
            mask = self._mask(ann, height, width)
            if ann.get("iscrowd", 0):
                ignore = mask if ignore is None else ignore | mask
            else:
                masks.append(mask)
                categories.append(int(ann.get("category_id", -1)))
                ids.append(ann.get("id"))
        return Sample(name, image, _stack(masks, height, width), ignore, source=str(path),
                      categories=categories, extra={"image_id": record.get("id"), "annotation_ids": ids})

    def _mask(self, ann: dict, height: int, width: int) -> np.ndarray:
        where = f"{self.annotation_json} (annotation id {ann.get('id')})"
        try:
            return _segmentation_to_mask(ann["segmentation"], height, width)
        except _READ_ERRORS as exc:
            _fail(where, f"bad segmentation: {type(exc).__name__}: {exc}")


def _segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO ``segmentation`` (polygon list, RLE with str/bytes or list counts) -> (H, W) bool."""
    if isinstance(segmentation, list):
        return _polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        if [int(s) for s in segmentation["size"]] != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} is not the image's [{height}, {width}]")
        return rle_to_mask(segmentation)
    raise TypeError(f"segmentation must be a polygon list or an RLE dict, got {type(segmentation).__name__}")


class YoloSegDataset(DatasetReader):
    """YOLO-seg: ``<image_dir>/<stem>.jpg`` + ``<label_dir>/<stem>.txt``, one instance a line:
    ``<class> x1 y1 x2 y2 ...`` normalised to [0, 1].

    ``label_dir`` defaults to ``image_dir`` with its last ``images`` part replaced by ``labels``
    (the Ultralytics rule). An image without a label file is a background image: masks (0, H, W)
    (its name is listed in ``unlabelled``); a label without an image is skipped. Samples: masks
    (N, H, W), ``categories`` (N,) the class ids; a malformed line skips the whole image.
    """

    kind = "YOLO-seg"
    layout = "images/<stem>.jpg + labels/<stem>.txt"

    def __init__(self, image_dir: str | Path, label_dir: str | Path | None = None) -> None:
        super().__init__(image_dir)
        self.label_dir = Path(label_dir) if label_dir is not None else _yolo_label_dir(self.root)
        if not self.root.is_dir():
            raise DatasetError(f"YOLO image folder not found: {self.root}")
        if not self.label_dir.is_dir():
            raise DatasetError(f"YOLO label folder not found: {self.label_dir} (images in {self.root})")
        images, image_clashes = _index_files(self.root, IMAGE_EXTENSIONS)
        labels, label_clashes = _index_files(self.label_dir, {".txt"})
        for path, reason in image_clashes + label_clashes:
            self._skip(path, reason)
        for stem, image_path in sorted(images.items()):
            self._items.append((stem, (image_path, labels.get(stem))))
        for stem, label_path in sorted(labels.items()):
            if stem not in images:
                self._skip(label_path, f"no image {self.root / stem}.* for this label file")
        self.unlabelled = [name for name, (_, label) in self._items if label is None]
        self._require_items()

    def _load(self, name: str, item: tuple[Path, Path | None]) -> Sample:
        image_path, label_path = item
        image = _load_rgb(image_path)
        height, width = image.shape[:2]
        instances = _read_yolo_labels(label_path) if label_path is not None else []
        scale = np.array([width, height], dtype=np.float64)
        masks = [_polygons_to_mask([(points * scale).ravel()], height, width) for _, points in instances]
        return Sample(name, image, _stack(masks, height, width), None, source=str(image_path),
                      categories=[cls for cls, _ in instances],
                      extra={"label_path": str(label_path) if label_path else None})


def _yolo_label_dir(image_dir: Path) -> Path:
    """Ultralytics rule: the last ``images`` folder in the path becomes ``labels``."""
    parts = list(image_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    raise DatasetError(f"cannot derive the label folder from {image_dir} (no 'images' in the path): "
                       "pass label_dir")


def _read_yolo_labels(path: Path) -> list[tuple[int, np.ndarray]]:
    """``(class id, (K, 2) normalised xy)`` per non-empty line of a YOLO-seg label file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        _fail(path, f"cannot read label file: {exc}")
    instances = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            cls, coords = int(tokens[0]), np.asarray(tokens[1:], dtype=np.float64)
        except ValueError:
            _fail(path, f"line {number}: not '<class> x1 y1 x2 y2 ...' numbers")
        if coords.size < 6 or coords.size % 2 or cls < 0:
            _fail(path, f"line {number}: need a class id >= 0 and at least 3 x,y points, got {len(tokens)} values")
        if not np.isfinite(coords).all() or coords.min() < -0.01 or coords.max() > 1.01:
            _fail(path, f"line {number}: coordinates must be normalised to [0, 1]")
        instances.append((cls, coords.reshape(-1, 2)))
    return instances


class Sa1bDataset(DatasetReader):
    """SA-1B: ``<stem>.jpg`` + ``<stem>.json`` side by side, JSON ``{"image": {...}, "annotations":
    [{"segmentation": RLE, ...}]}``. Samples: masks (N, H, W), ``extra["annotations"]`` the
    per-mask metadata (id, bbox, area, predicted_iou, stability_score, ...), ``extra["image_info"]``.
    """

    kind = "SA-1B"
    layout = "<stem>.jpg + <stem>.json per image"

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder)
        self._require_dir(".")
        images, image_clashes = _index_files(self.root, IMAGE_EXTENSIONS)
        annotations, json_clashes = _index_files(self.root, {".json"})
        for path, reason in image_clashes + json_clashes:
            self._skip(path, reason)
        for stem, json_path in sorted(annotations.items()):
            if stem in images:
                self._items.append((stem, (images[stem], json_path)))
            else:
                self._skip(json_path, f"no image {self.root / stem}.* for this annotation file")
        for stem, image_path in sorted(images.items()):
            if stem not in annotations:
                self._skip(image_path, f"no annotation file {self.root / stem}.json for this image")
        self._require_items()

    def _load(self, name: str, item: tuple[Path, Path]) -> Sample:
        image_path, json_path = item
        data = _read_json(json_path)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            _fail(json_path, "not an SA-1B annotation file: no 'annotations' list")
        image = _load_rgb(image_path)
        height, width = image.shape[:2]
        try:
            masks = [_segmentation_to_mask(a["segmentation"], height, width) for a in data["annotations"]]
        except _READ_ERRORS as exc:
            _fail(json_path, f"bad segmentation: {type(exc).__name__}: {exc}")
        meta = [{k: v for k, v in a.items() if k != "segmentation"} for a in data["annotations"]]
        return Sample(name, image, _stack(masks, height, width), None, source=str(image_path),
                      extra={"annotations": meta, "image_info": data.get("image", {}),
                             "json_path": str(json_path)})


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def _open_coco(root: Path, image_dir: str | Path | None = None) -> CocoDataset:
    """``root`` is the annotation JSON, or a folder holding exactly one ``*.json``."""
    if root.is_dir():
        candidates = sorted(root.glob("*.json"))
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise DatasetError(f"{root} does not look like a COCO folder: need exactly one *.json "
                               f"annotation file (found {found}); pass the JSON path")
        root = candidates[0]
    return CocoDataset(root, image_dir)


def _open_yolo(root: Path, split: str | None = None, label_dir: str | Path | None = None) -> YoloSegDataset:
    """``root`` is an image folder, or a dataset folder with ``images/[<split>/]`` and ``labels/``."""
    if (root / "images").is_dir():
        root = root / "images"
        if split is not None:
            root = root / split
        else:
            subdirs = [p for p in sorted(root.iterdir()) if p.is_dir()]
            has_images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir())
            if not has_images and len(subdirs) == 1:
                root = subdirs[0]
            elif not has_images:
                splits = ", ".join(p.name for p in subdirs)
                raise DatasetError(f"{root} holds several splits ({splits}): pass split=")
    elif split is not None:
        raise DatasetError(f"{root} does not look like a YOLO dataset folder: missing images/")
    return YoloSegDataset(root, label_dir)


def _open_paste(root: Path, **kwargs: Any) -> DatasetReader:
    """``root`` holds ``coco128-seg/`` and ``BSDS500/`` (+ GrabCut/, Berkeley/ for the overlap rule)."""
    from samkit.data.synthetic import open_paste_scenes  # imported here: synthetic builds on this module

    return open_paste_scenes(root, **kwargs)


def _open_refer(root: Path, **kwargs: Any) -> DatasetReader:
    """``root`` is a refs JSON / JSONL file, or a folder holding ``refs.json`` (see :mod:`samkit.data.refer`)."""
    from samkit.data.refer import open_refs  # imported here: refer builds on this module

    return open_refs(root, **kwargs)


def _open_refer_scenes(root: Path, **kwargs: Any) -> DatasetReader:
    """``root`` holds ``BSDS500/`` (+ GrabCut/, Berkeley/ for the overlap rule), see :mod:`samkit.data.refer_scenes`."""
    from samkit.data.refer_scenes import open_refer_scenes  # imported here: refer_scenes builds on this module

    return open_refer_scenes(root, **kwargs)


_OPENERS: dict[str, Callable[..., DatasetReader]] = {
    "grabcut": GrabCutDataset,
    "berkeley": BerkeleyDataset,
    "davis": DavisDataset,
    "bsds500": BSDS500Dataset,
    "coco": _open_coco,
    "yolo": _open_yolo,
    "sa1b": Sa1bDataset,
    "paste": _open_paste,
    "refer": _open_refer,
    "referscenes": _open_refer_scenes,
}
DATASET_KINDS = tuple(_OPENERS)


def open_dataset(kind: str, root: str | Path, **kwargs: Any) -> DatasetReader:
    """Open the dataset of ``kind`` (one of ``DATASET_KINDS``) at ``root``.

    ``kwargs`` go to the reader (``split=`` for bsds500/yolo, ``image_dir=`` for coco, ...).
    Raises ``DatasetError`` for an unknown kind or a root that does not have that layout.
    """
    opener = _OPENERS.get(kind.strip().lower().replace("-", "").replace("_", ""))
    if opener is None:
        raise DatasetError(f"unknown dataset kind {kind!r}: expected one of {', '.join(DATASET_KINDS)}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{kind} dataset root not found: {root}")
    return opener(root, **kwargs)
