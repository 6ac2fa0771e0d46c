"""A served project made of a few GrabCut images, with an admin, an annotator and a viewer signed in."""
from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from samkit.server.app import create_app
from samkit.server.settings import Settings
from tests.conftest import DATA, require_shared

GRABCUT_IMAGES = ("106024.jpg", "124080.jpg", "153077.jpg")
ADMIN_PASSWORD = "admin-pass-1"


class Served:
    """A TestClient on a fresh project, with a bearer header per role."""

    def __init__(self, client: TestClient, app: FastAPI) -> None:
        self.client, self.app = client, app
        self.state = app.state.samkit
        self.settings = self.state.settings
        self.headers = {"admin": self.login("admin", ADMIN_PASSWORD)}
        for role in ("annotator", "viewer"):
            r = client.post("/api/users", json={"username": role, "password": f"{role}-pass", "role": role},
                            headers=self.headers["admin"])
            assert r.status_code == 201, r.text
            self.headers[role] = self.login(role, f"{role}-pass")

    def login(self, username: str, password: str) -> dict:
        r = self.client.post("/api/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def get(self, url: str, role: str = "annotator", **kw):  # noqa: ANN201 (httpx.Response)
        return self.client.get(url, headers=self.headers[role], **kw)

    def post(self, url: str, role: str = "annotator", **kw):  # noqa: ANN201
        return self.client.post(url, headers=self.headers[role], **kw)

    def patch(self, url: str, role: str = "annotator", **kw):  # noqa: ANN201
        return self.client.patch(url, headers=self.headers[role], **kw)

    def delete(self, url: str, role: str = "annotator", **kw):  # noqa: ANN201
        return self.client.delete(url, headers=self.headers[role], **kw)

    def wait_job(self, job_id: int, timeout: float = 300) -> dict:
        """Poll a job until it leaves queued/running (a bound, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/api/projects/1/jobs/{job_id}").json()
            if job["state"] not in ("queued", "running"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")


def make_project(root: Path, names: tuple[str, ...] = GRABCUT_IMAGES) -> Path:
    """``root/project`` with ``images/`` holding copies of GrabCut images."""
    source = require_shared(DATA / "GrabCut" / "data_GT")
    images = root / "project" / "images"
    images.mkdir(parents=True)
    for name in names:
        shutil.copy(source / name, images / name)
    return root / "project"


def settings_for(project: Path, **kw) -> Settings:  # noqa: ANN003
    return Settings(project, admin_password=ADMIN_PASSWORD, job_poll_s=0.05, **kw)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = settings_for(make_project(tmp_path), max_pixels=1_000_000, max_upload_bytes=2_000_000,
                            login_attempts=3)
    app = create_app(settings)
    with TestClient(app) as client:
        yield Served(client, app)


JOBS = "/api/projects/1/jobs"
# everything-mode settings that keep masks from samkit_tiny with a 4x4 grid (fast jobs)
LOW = {"points_per_side": 4, "pred_iou_thresh": 0.2, "stability_score_thresh": 0.6, "stability_score_offset": 0.1}


def run_job(served: Served, kind: str, role: str = "annotator", **params) -> dict:
    """Start a job of ``kind`` with ``params`` as ``role`` and wait for it to end; returns the job."""
    r = served.post(JOBS, role, json={"kind": kind, "params": params})
    assert r.status_code == 201, r.text
    return served.wait_job(r.json()["id"])
