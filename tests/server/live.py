"""A real server on loopback (uvicorn in a thread) and Debian's chromium driven by Playwright, for the
tests that run the browser side: never a browser download, and a missing chromium fails in one line."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from samkit.server.threaded import serve_in_thread as live_server

__all__ = ["CHROMIUM", "chromium", "live_server"]

CHROMIUM = Path("/usr/bin/chromium")


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium (``apt-get install chromium``; ``make services`` installs it) under Playwright."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make services` or apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
