"""``samkit serve``: its options, one-line errors, and a real uvicorn server on loopback."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from samkit.cli import main
from tests.server.conftest import make_project


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                return proc, "".join(lines)
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("samkit serve did not answer: " + "".join(lines))


def test_serve_runs_uvicorn_and_creates_the_admin_once(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    port = _free_port()
    proc, err = _serve(project, port)
    try:
        password = re.search(r"created user 'admin' with password (\S+)", err).group(1)
        assert "3 images under" in err
        r = httpx.post(f"http://127.0.0.1:{port}/api/auth/login", json={"username": "admin", "password": password})
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/api/projects").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert (project / "samkit.db").is_file()
    proc, err = _serve(project, port)  # a restart keeps the admin and prints no password
    try:
        assert "password" not in err
        r = httpx.post(f"http://127.0.0.1:{port}/api/auth/login", json={"username": "admin", "password": password})
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)
