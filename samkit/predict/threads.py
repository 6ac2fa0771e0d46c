"""How many torch threads each predictor call uses."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from samkit.runtime import default_threads


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
