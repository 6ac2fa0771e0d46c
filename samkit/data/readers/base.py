"""The reader base: :class:`DatasetReader`, its errors, shared file helpers and the dataset-kind registry.

Readers are small lazy sequences built from a folder (or an annotation file): construction only
lists and pairs files; images and annotations are decoded in ``__getitem__``. All readers share:

* ``len(ds)``, ``ds[i]`` (a ``Sample``), ``iter(ds)``, ``ds.names`` (sample ids, in order);
* ``ds.skipped``: ``(path, reason)`` for every file that could not be used. Pairing problems
  (an image without its mask, a label without its image) are found at construction; corrupt
  content (a truncated image, an unreadable ``.mat`` or label file) when the item is loaded.
  Each skipped item also emits a :class:`DatasetWarning`. ``ds[i]`` on a corrupt item raises
  :class:`DatasetError` (and records it); iterating skips it and carries on.

A module that defines a reader makes it reachable by name with :func:`register_dataset`;
:func:`open_dataset` opens any registered kind.
"""
from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import numpy as np
from PIL import Image

from samkit.data.image_io import load_image
from samkit.data.sample import Sample
from samkit.errors import ImageError, SamkitError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# PIL modes whose pixel values are labels (palette indices, grey levels); others are colours.
_LABEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Errors raised by PIL / numpy / json for corrupt content.
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, KeyError, TypeError, IndexError)

T = TypeVar("T")
Opener = TypeVar("Opener", bound=Callable[..., Any])

class DatasetError(SamkitError):
    """A dataset root has the wrong layout, or one of its files cannot be used (``path``, ``reason``)."""

    def __init__(self, message: str, path: str | Path | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = str(path) if path is not None else None
        self.reason = reason if reason is not None else message


class DatasetWarning(UserWarning):
    """A dataset file was skipped (the message names the path and the reason)."""


def fail(path: str | Path, reason: str) -> NoReturn:
    """Raise a ``DatasetError`` for one unusable file."""
    raise DatasetError(f"{path}: {reason}", path=path, reason=reason)


class DatasetReader(Sequence[Sample]):
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

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]  # no slices
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


def index_files(
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


def load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 image via ``load_image``; unreadable -> ``DatasetError`` naming ``path``."""
    try:
        return load_image(path)
    except ImageError as exc:
        fail(path, str(exc))


def read_label_map(path: Path) -> np.ndarray:
    """(H, W) label values of a mask image: palette indices / grey levels as stored, else the max
    over the colour channels (so any non-black colour is > 0). Not ``load_image``: that one maps
    palette indices to colours and scales 16-bit levels, which would change the labels."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _LABEL_MODES:
                return np.asarray(im)
            return np.asarray(im.convert("RGB")).max(axis=2)
    except READ_ERRORS as exc:
        fail(path, f"cannot read mask: {exc}")


def read_json(path: Path) -> Any:
    """Parsed JSON file; unreadable or invalid -> ``DatasetError`` naming ``path``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        fail(path, f"cannot read JSON: {exc}")


def check_size(array: np.ndarray, image: np.ndarray, path: Path | str, what: str) -> None:
    """Fail when ``array``'s (H, W) differs from the image's."""
    if array.shape[:2] != image.shape[:2]:
        fail(path, f"{what} is {array.shape[1]}x{array.shape[0]} but the image is "
                    f"{image.shape[1]}x{image.shape[0]}")


def stack_masks(masks: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """List of (H, W) bool masks -> (N, H, W) bool (N may be 0)."""
    if not masks:
        return np.zeros((0, height, width), dtype=bool)
    return np.stack(masks).astype(bool, copy=False)



# --------------------------------------------------------------------------------------------
# Registry of dataset kinds
# --------------------------------------------------------------------------------------------

_OPENERS: dict[str, Callable[..., DatasetReader]] = {}


def _kind_key(kind: str) -> str:
    return kind.strip().lower().replace("-", "").replace("_", "")


def register_dataset(kind: str) -> Callable[[Opener], Opener]:
    """Decorator: ``open_dataset(kind, root, **kwargs)`` calls the decorated reader class or opener
    function as ``opener(Path(root), **kwargs)``. Kind names ignore case, ``-`` and ``_``."""

    def add(opener: Opener) -> Opener:
        key = _kind_key(kind)
        if key in _OPENERS and _OPENERS[key] is not opener:
            raise ValueError(f"dataset kind {kind!r} is already registered ({_OPENERS[key].__qualname__})")
        _OPENERS[key] = opener
        return opener

    return add


def dataset_kinds() -> tuple[str, ...]:
    """The registered dataset kinds, in registration order."""
    return tuple(_OPENERS)


def open_dataset(kind: str, root: str | Path, **kwargs: Any) -> DatasetReader:
    """Open the dataset of ``kind`` (one of :func:`dataset_kinds`) at ``root``.

    ``kwargs`` go to the reader (``split=`` for bsds500/yolo, ``image_dir=`` for coco, ...).
    Raises ``DatasetError`` for an unknown kind or a root that does not have that layout.
    """
    opener = _OPENERS.get(_kind_key(kind))
    if opener is None:
        raise DatasetError(f"unknown dataset kind {kind!r}: expected one of {', '.join(_OPENERS)}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{kind} dataset root not found: {root}")
    return opener(root, **kwargs)
