"""The browser annotation tool under test: a real ``samkit serve`` on loopback (tests/server/live.py) on
GrabCut images with an annotator account, and Debian's chromium driven by Playwright; one server and
one browser per test module, a fresh browser context (no stored token) per test."""
from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from samkit.server.app import create_app
from tests.server.conftest import ADMIN_PASSWORD, make_project, settings_for
from tests.server.live import chromium, live_server

ANNOTATOR = ("anna", "anna-pass-1")


class LiveServer:
    """The served app's URL, and a small JSON client (as the annotator) to check what the browser did."""

    def __init__(self, url: str, project_dir: Path) -> None:
        self.url, self.project_dir = url, project_dir
        admin = self.login("admin", ADMIN_PASSWORD)
        self.call("POST", "/api/users", {"username": ANNOTATOR[0], "password": ANNOTATOR[1], "role": "annotator"},
                  token=admin)
        self.token = self.login(*ANNOTATOR)

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None):  # noqa: ANN201
        """The JSON answer; urllib.error.HTTPError on a non-2xx status."""
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        bearer = token or getattr(self, "token", None)
        if bearer:
            req.add_header("Authorization", f"Bearer {bearer}")
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def login(self, username: str, password: str) -> str:
        return self.call("POST", "/api/auth/login", {"username": username, "password": password})["token"]

    def annotations(self, image_id: int) -> list[dict]:
        return self.call("GET", f"/api/projects/1/images/{image_id}/annotations")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    project = make_project(tmp_path_factory.mktemp("web"))
    with live_server(create_app(settings_for(project))) as url:
        yield LiveServer(url, project)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser, live: LiveServer) -> Iterator[Page]:
    """A fresh context with a 1200x800 viewport; a JavaScript error in the page fails the test."""
    context = browser.new_context(viewport={"width": 1200, "height": 800}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(60_000)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"

