"""``samkit serve``: its options, one-line errors, and a real uvicorn server on loopback."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from samkit.cli import main
from samkit.engine.store.db import default_url, open_store
from samkit.engine.store.models import Annotation, Job
from samkit.server.threaded import free_port
from tests.server.conftest import GRABCUT_IMAGES, LOW, make_project

pytestmark = pytest.mark.slow  # real server processes / jobs / PostgreSQL: seconds to a minute each

TIMEOUT = 120  # s per request: generous, the machine may be loaded (not a speed check)


def test_help_and_bad_input(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["serve", "--help"]) == 0
    assert "--images" in capsys.readouterr().out
    assert main(["serve", str(tmp_path / "p"), "--db", "mysql://u@h/db"]) == 2
    assert capsys.readouterr().err.strip() == "samkit: error: --db: unsupported database 'mysql' (sqlite or postgresql)"
    assert main(["serve", str(tmp_path / "p"), "--images", str(tmp_path / "missing")]) == 2
    assert "samkit: error: --images: not a folder" in capsys.readouterr().err


def _serve(project: Path, port: int) -> tuple[subprocess.Popen, str]:
    """Start ``samkit serve``; returns the process and its stderr up to the moment it answers."""
    env = {k: v for k, v in os.environ.items() if k != "SAMKIT_ADMIN_PASSWORD"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "samkit.cli", "serve", str(project), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stderr:  # the start-up lines end with the URL line
        lines.append(line)
        if "http://" in line:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining: a full pipe would block it
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=TIMEOUT).status_code == 200:
                return proc, "".join(lines)
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("samkit serve did not answer: " + "".join(lines))


def _login(base: str, password: str) -> dict:
    r = httpx.post(f"{base}/auth/login", json={"username": "admin", "password": password}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_serve_runs_uvicorn_and_creates_the_admin_once(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    port = free_port()
    proc, err = _serve(project, port)
    try:
        password = re.search(r"created user 'admin' with password (\S+)", err).group(1)
        assert "3 images under" in err
        assert "Authorization" in _login(f"http://127.0.0.1:{port}/api", password)
        assert httpx.get(f"http://127.0.0.1:{port}/api/projects", timeout=TIMEOUT).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert (project / "samkit.db").is_file()
    proc, err = _serve(project, port)  # a restart keeps the admin and prints no password
    try:
        assert "password" not in err
        assert "Authorization" in _login(f"http://127.0.0.1:{port}/api", password)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_server_killed_mid_job_keeps_whole_images_and_resumes(tmp_path: Path) -> None:
    """SIGKILL during an auto job: the images done stay as they were, the job resumes at the next start
    and labels the others once."""
    project = make_project(tmp_path, GRABCUT_IMAGES + ("153093.jpg", "181079.jpg"))
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    proc, err = _serve(project, port)
    password = re.search(r"created user 'admin' with password (\S+)", err).group(1)
    try:
        headers = _login(base, password)
        params = {**LOW, "points_per_side": 16}
        job = httpx.post(f"{base}/projects/1/jobs", json={"kind": "auto", "params": params}, headers=headers,
                         timeout=TIMEOUT).json()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            seen = httpx.get(f"{base}/projects/1/jobs/{job['id']}", headers=headers, timeout=TIMEOUT).json()
            if seen["done"] >= 2 or seen["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert seen["state"] == "running" and seen["done"] < seen["total"], seen  # mid-job
    finally:
        proc.kill()
        proc.wait(timeout=60)
    _, sessions = open_store(default_url(project))
    with sessions() as s:
        assert s.get(Job, job["id"]).state == "running"
        before = {(a.id, a.image_id, a.area) for a in s.scalars(select(Annotation))}
    assert len({image for _, image, _ in before}) >= 2
    proc, _ = _serve(project, port)
    try:
        headers = _login(base, password)
        deadline = time.monotonic() + 600  # a bound for a loaded machine, not a speed check
        while time.monotonic() < deadline:
            seen = httpx.get(f"{base}/projects/1/jobs/{job['id']}", headers=headers, timeout=TIMEOUT).json()
            if seen["state"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert seen["state"] == "done" and seen["done"] == seen["total"] == 5, seen
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    with sessions() as s:
        after = {(a.id, a.image_id, a.area) for a in s.scalars(select(Annotation))}
        per_image = {image: [tuple(a.rle.items()) for a in s.scalars(select(Annotation).where(
            Annotation.image_id == image))] for image in range(1, 6)}
    assert before <= after  # nothing written before the kill was lost or changed
    done_before = {image for _, image, _ in before}  # images are written whole: these were finished
    assert {a for a in after if a[1] in done_before} == before  # the resumed job skipped them
    for masks in per_image.values():  # every image labelled once: no mask twice
        assert masks and len(masks) == len({str(m) for m in masks})
