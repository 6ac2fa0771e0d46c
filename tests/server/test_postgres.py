"""The server's main flows on a real PostgreSQL database (``--db postgresql://...``)."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from samkit.server.app import create_app
from tests.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.server.conftest import LOW, Served, make_project, run_job, settings_for

pytestmark = pytest.mark.slow  # real server processes / jobs / PostgreSQL: seconds to a minute each


def test_annotate_and_jobs_on_postgres(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    app = create_app(settings_for(make_project(tmp_path), db_url=postgres_url))
    assert not (tmp_path / "project" / "samkit.db").exists()
    with TestClient(app) as client:
        served = Served(client, app)
        out = served.post("/api/projects/1/images/1/predict", json={"points": [[200, 150]], "labels": [1]}).json()
        ann = served.post("/api/projects/1/images/1/annotations", json={"rle": out["masks"][0]["rle"]}).json()
        url = f"/api/projects/1/annotations/{ann['id']}"
        assert served.patch(url, json={"version": 1, "rle": out["masks"][1]["rle"]}).status_code == 200
        r = served.patch(url, "admin", json={"version": 1, "status": "rejected"})
        assert r.status_code == 409 and r.json()["current"]["version"] == 2
        assert served.post("/api/projects/1/images/1/undo").json()["undone"] == "update"
        assert run_job(served, "auto", **LOW)["state"] == "done"
        export = run_job(served, "export")
        doc = served.get(f"/api/projects/1/jobs/{export['id']}/result").json()
        assert len(doc["images"]) == 3 and len(doc["annotations"]) > 1
