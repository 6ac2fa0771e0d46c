"""BSDS500 (``images/<split>/<id>.jpg`` + ``groundTruth/<split>/<id>.mat``) and the never-train-on-eval
rule (:func:`evaluation_image_ids`: BSDS photos that are also GrabCut / Berkeley benchmark images)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from samkit._optional import require
from samkit.data.readers.base import (
    IMAGE_EXTENSIONS,
    READ_ERRORS,
    DatasetError,
    DatasetReader,
    check_size,
    fail,
    index_files,
    load_rgb,
    register_dataset,
)
from samkit.data.readers.ritm import strip_object_suffix
from samkit.data.sample import Sample

BSDS_SPLITS = ("train", "val", "test")


@register_dataset("bsds500")
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
        images, image_clashes = index_files(image_dir, IMAGE_EXTENSIONS)
        mats, mat_clashes = index_files(gt_dir, {".mat"})
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
        image = load_rgb(image_path)
        masks, annotator = [], []
        annotations = read_bsds_mat(mat_path)
        for index, (segmentation, _) in enumerate(annotations):
            check_size(segmentation, image, mat_path, f"annotator {index}'s segmentation")
            labels = np.unique(segmentation)
            masks.append(segmentation[None] == labels[:, None, None])
            annotator.append(np.full(len(labels), index, dtype=np.int64))
        return Sample(name, image, np.concatenate(masks), None, source=str(image_path),
                      extra={"annotator": np.concatenate(annotator), "num_annotators": len(annotations),
                             "mat_path": str(mat_path)})

    def boundaries(self, index: int) -> np.ndarray:
        """Human boundary maps of sample ``index``: (A, H, W) bool, one per annotator."""
        _, (_, mat_path) = self._items[index]
        return self._guard(lambda: read_bsds_boundaries(mat_path))


def read_bsds_mat(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(Segmentation (H, W) int, Boundaries (H, W))`` per annotator of a BSDS ``.mat`` file."""
    require("scipy", "eval", "BSDS .mat files")
    from scipy.io import loadmat  # imported here: only this reader needs it, and it is slow to import

    try:
        cells = loadmat(str(path), simplify_cells=True)["groundTruth"]
    except Exception as exc:  # loadmat raises many types for corrupt files
        fail(path, f"cannot read BSDS ground truth: {type(exc).__name__}: {exc}")
    cells = [cells] if isinstance(cells, dict) else list(np.atleast_1d(cells))
    out = []
    for index, cell in enumerate(cells):
        try:
            segmentation, edges = np.asarray(cell["Segmentation"]), np.asarray(cell["Boundaries"])
        except READ_ERRORS:
            fail(path, f"annotator {index} has no Segmentation/Boundaries")
        if segmentation.ndim != 2 or segmentation.shape != edges.shape:
            fail(path, f"annotator {index}: Segmentation {segmentation.shape} / Boundaries "
                        f"{edges.shape} are not matching 2-D maps")
        out.append((segmentation, edges))
    if not out:
        fail(path, "no annotators in groundTruth")
    return out


def read_bsds_boundaries(path: str | os.PathLike) -> np.ndarray:
    """Human boundary maps of a BSDS ``.mat`` file: (A, H, W) bool, one per annotator
    (``groundTruth{k}.Boundaries``); an unreadable file raises ``DatasetError`` naming it."""
    return np.stack([edges > 0 for _, edges in read_bsds_mat(Path(path))])


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
        by_name = [c for c in dict.fromkeys([path.stem, strip_object_suffix(path.stem)]) if c in self.bsds]
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
            except READ_ERRORS:
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
            except READ_ERRORS:
                self._thumbs[path] = None
        return self._thumbs[path]

