"""The embedding cache's background encoding runs at a lower CPU priority than the clicks."""
from __future__ import annotations

import os
import threading

from samkit.engine.embeddings import BACKGROUND_NICE, _background_priority


def test_background_thread_gets_a_lower_priority_and_the_caller_keeps_its_own() -> None:
    seen: list[int] = []

    def work() -> None:
        _background_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [max(before, BACKGROUND_NICE)]  # lowered, never raised
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # only that thread
