"""How many torch threads each predictor call uses."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from samkit.runtime import default_threads


@contextmanager
def thread_budget(threads: int | None = None) -> Iterator[int]:
    """Run the block with ``threads`` torch intra-op threads (None: :func:`default_threads` now);
    the previous setting is restored afterwards. Yields the number used."""
    n = threads or default_threads()
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)
