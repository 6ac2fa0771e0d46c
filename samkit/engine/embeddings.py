"""Image embeddings for the annotation server: one :class:`~samkit.predict.predictor.Predictor` per
image, kept in an in-memory LRU and on disk (``<cache>/<sha256>.<model tag>.safetensors``), so an image
is encoded once per model version; :meth:`EmbeddingCache.prefetch` encodes the next images in the
background. Clicks run under one lock (:attr:`EmbeddingCache.compute`), encoder runs under another, so a
click on an image already encoded never waits for the encoding of the next ones (they share the CPUs
instead: the predictor's adaptive thread count gives each what is free). With a refiner, one more predictor
is used under :attr:`~EmbeddingCache.compute` (:meth:`EmbeddingCache.refining`): the refiner caches one image
at a time, switched from the disk embedding when a refined prediction asks for another image."""
from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from samkit.errors import SamkitError
from samkit.predict.predictor import Predictor
from samkit.predict.refining import MaskRefiner
from samkit.predict.text import has_text_encoder


class EmbeddingCache:
    """Predictors with their image set, for ``model`` tagged ``tag`` (a model version); ``capacity`` images
    in memory (about 4 MB each for SAM-family models), every embedding also in ``folder``; ``refiner``: a
    mask refiner for :meth:`refining` (None: none)."""

    def __init__(self, model, tag: str, folder: Path, capacity: int = 32,  # noqa: ANN001 (a Sam)
                 refiner: MaskRefiner | None = None) -> None:
        if capacity < 1:
            raise SamkitError(f"embedding cache capacity must be >= 1, got {capacity}")
        self.model, self.tag, self.folder, self.capacity = model, tag, Path(folder), capacity
        self.folder.mkdir(parents=True, exist_ok=True)
        self.compute = threading.Lock()  # clicks (and the refining predictor)
        self.encoding = threading.Lock()  # encoder runs, one at a time (never a click's wait for a cached image)
        self._lru: OrderedDict[str, Predictor] = OrderedDict()
        self._lru_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samkit-prefetch",
                                        initializer=_background_priority)
        self._refining = Predictor(model, refiner=refiner) if refiner is not None else None
        self._refining_sha: str | None = None

    def file(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.{self.tag}.safetensors"

    def _cached(self, sha256: str) -> Predictor | None:
        with self._lru_lock:
            pred = self._lru.get(sha256)
            if pred is not None:
                self._lru.move_to_end(sha256)
            return pred

    def _keep(self, sha256: str, pred: Predictor) -> None:
        with self._lru_lock:
            self._lru[sha256] = pred
            self._lru.move_to_end(sha256)
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)

    def in_memory(self, sha256: str) -> bool:
        with self._lru_lock:
            return sha256 in self._lru

    def ready(self, sha256: str, refine: bool = False) -> bool:
        """Whether a click on this image would only decode: its embedding in memory and, to refine, the
        refining predictor on it already (no encoder run, no file read)."""
        return self.in_memory(sha256) and (not refine or self._refining_sha == sha256)

    def get(self, path: Path, sha256: str) -> Predictor:
        """The predictor of the image at ``path`` (content ``sha256``): from memory, disk, or encoded now."""
        pred = self._cached(sha256)
        if pred is not None:
            return pred
        with self.encoding:
            pred = self._cached(sha256)  # encoded by another thread while this one waited
            if pred is not None:
                return pred
            pred = Predictor(self.model)
            disk = self.file(sha256)
            if disk.is_file():  # a text-promptable model also needs the image for its text branch
                pred.load_embedding(disk, image=path if has_text_encoder(self.model) else None)
            else:
                pred.set_image(path)
                pred.save_embedding(disk)
            self._keep(sha256, pred)
            return pred

    def refining(self, path: Path, sha256: str) -> Predictor:
        """The predictor with the refiner, set to the image at ``path`` (call :meth:`get` first, so the
        embedding is on disk, then this under :attr:`compute`). SamkitError without a refiner."""
        if self._refining is None:
            raise SamkitError("refine=true needs a refiner: start the server with --refiner NAME_OR_PATH")
        if self._refining_sha != sha256:
            self._refining_sha = None  # not half-switched if loading fails
            self._refining.load_embedding(self.file(sha256), image=path)
            self._refining_sha = sha256
        return self._refining

    def prefetch(self, items: list[tuple[Path, str]]) -> list[Future]:
        """Encode (path, sha256) images in the background unless they are in memory already."""
        return [self._pool.submit(self.get, path, sha) for path, sha in items if not self.in_memory(sha)]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


BACKGROUND_NICE = 10


def _background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: nice is per thread, and the OpenMP threads it starts
    inherit it), so that clicks keep the CPUs while the next images are encoded; a no-op elsewhere."""
    with contextlib.suppress(AttributeError, OSError):  # no os.setpriority (Windows), or not allowed
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(BACKGROUND_NICE, os.getpriority(os.PRIO_PROCESS, tid)))


def features_fp16(pred: Predictor) -> tuple[bytes, list[int]]:
    """The image embedding as little-endian fp16 bytes and its shape ((1, 256, 64, 64) for SAM)."""
    if pred.features is None:
        raise SamkitError("no image embedding set")
    feats = pred.features.detach().float().cpu().contiguous().numpy().astype("<f2")
    return np.ascontiguousarray(feats).tobytes(), list(feats.shape)
