"""Helpers of the store tests (SQLite and PostgreSQL): two processes writing one database at once."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np

from samkit.engine.store import annotations as ops
from samkit.engine.store.db import open_store
from samkit.engine.store.models import Image, Project

WRITES = 40


def setup_store(url: str) -> None:
    _, sessions = open_store(url)
    with sessions.begin() as s:
        s.add(Project(name="p"))
        s.flush()
        s.add(Image(project_id=1, path="a.png", sha256="0" * 64, size_bytes=1, width=8, height=8))


def _writer(url: str, offset: int) -> None:
    _, sessions = open_store(url)
    mask = np.zeros((8, 8), bool)
    for i in range(WRITES):
        mask[:] = False
        mask[(offset + i) % 8, :] = True
        with sessions.begin() as s:  # one transaction per write, as the server does
            ops.create(s, 1, mask, None, source="manual")


def write_from_two_processes(url: str) -> None:
    """Set up ``url`` and let two processes add WRITES annotations each, at the same time."""
    setup_store(url)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, k)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
