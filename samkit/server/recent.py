"""Short-lived in-process copies of the database reads every click repeats (the signed-in user of a bearer
token, the clicked image's row), so that a click does not wait for the database (issue 18: each read cost
about as much as the rest of the framework's work per request).

Entries live :data:`RECENT_TTL_S` seconds. This server drops the token entries at once when it revokes a
token (logout, deactivating a user); a revocation made by another process that shares the database takes
effect here within that time, as a switched model version does (``ServerState.sync_model``).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

RECENT_TTL_S = 1.0
RECENT_MAX = 1024

V = TypeVar("V")


class Recent(Generic[V]):
    """A thread-safe map whose entries expire ``ttl`` seconds after they were put (``cachetools.TTLCache``
    behind a lock; at most ``maxsize`` entries, the oldest dropped first). ``timer`` is for tests."""

    def __init__(self, ttl: float = RECENT_TTL_S, maxsize: int = RECENT_MAX,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self._cache: TTLCache = TTLCache(maxsize, ttl, timer)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            return self._cache.get(key)

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._cache[key] = value

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
