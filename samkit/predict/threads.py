"""How many torch threads each predictor call uses, and calls split across worker threads."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

from samkit.runtime import default_threads

T = TypeVar("T")
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


@contextmanager
def thread_budget(threads: int | None = None, rows: int | None = None) -> Iterator[int]:
    """Run the block with ``threads`` torch intra-op threads; None: torch's setting
    (``torch.set_num_threads``, the CLI's ``--threads``), lowered to the CPUs free now and to one for a
    small call of ``rows`` rows of work (:func:`default_threads`). The previous setting is restored
    afterwards. Yields the number used."""
    before = torch.get_num_threads()
    n = threads or min(before, default_threads(rows))
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)


def side_by_side(work: Callable[[int, int], T], items: int, parts: int) -> list[T]:
    """``work(start, stop)`` for ``parts`` contiguous ranges of ``items`` items at once, each in a worker thread on
    one torch thread; results in range order. For a call of many small operations (a decoder batch), whole calls
    side by side on separate CPUs scale better than each operation's OpenMP team. The caller's torch thread
    count is set again afterwards (the workers' setting also reaches process-wide BLAS settings)."""
    global _POOL
    before = torch.get_num_threads()
    bounds = [round(i * items / parts) for i in range(parts + 1)]

    def one(start: int, stop: int) -> T:
        torch.set_num_threads(1)  # this worker's OpenMP teams: one thread
        return work(start, stop)

    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="samkit-part")
        pool = _POOL
    try:
        return list(pool.map(one, bounds[:-1], bounds[1:]))
    finally:
        torch.set_num_threads(before)
