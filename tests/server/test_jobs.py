"""Jobs through the API: pre-encode, fully automatic labelling (auto), semi-automatic pre-fill (semi,
pending review), COCO export (downloadable) and import, cancel, and recovery after a restart."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from samkit.data.formats import mask_to_polygons
from samkit.data.masks import mask_to_rle
from samkit.data.readers.coco import segmentation_to_mask
from samkit.engine.store.models import Annotation, Job
from samkit.server.app import create_app
from samkit.server.state import ServerState
from tests.server.conftest import JOBS, LOW, Served, make_project, run_job, settings_for

pytestmark = pytest.mark.slow  # real server processes / jobs / PostgreSQL: seconds to a minute each

# samkit_tiny's scores run well below SAM's (README): thresholds that keep some masks, a coarse grid
def _count(served: Served, **where) -> int:  # noqa: ANN003
    with served.state.sessions() as s:
        query = select(func.count(Annotation.id)).where(Annotation.deleted_at.is_(None))
        for key, value in where.items():
            query = query.where(getattr(Annotation, key) == value)
        return s.scalar(query)


def test_encode_job_fills_the_disk_cache(served: Served) -> None:
    job = run_job(served, "encode")
    assert job["state"] == "done" and job["done"] == job["total"] == 3
    for image in served.get("/api/projects/1/images").json():
        assert served.state.embeddings.file(image["sha256"]).is_file()


def test_auto_semi_and_export(served: Served) -> None:
    auto = run_job(served, "auto", **LOW)
    assert auto["state"] == "done", auto
    n_auto = _count(served, source="auto", status="accepted", job_id=auto["id"])
    assert n_auto > 0
    with served.state.sessions() as s:
        images = {a.image_id for a in s.scalars(select(Annotation).where(Annotation.job_id == auto["id"]))}
    assert len(images) >= 2  # masks on more than one image

    # semi: stricter thresholds than auto's (the defaults, 0.9 / 0.95, keep nothing of samkit_tiny's)
    strict = {**LOW, "pred_iou_thresh": 0.3, "stability_score_thresh": 0.8}
    semi = run_job(served, "semi", **strict)
    assert semi["state"] == "done", semi
    n_semi = _count(served, source="semi", status="pending")
    assert 0 < n_semi < n_auto
    pending = [a for i in (1, 2, 3) for a in served.get(f"/api/projects/1/images/{i}/annotations").json()
               if a["source"] == "semi"]
    assert len(pending) == n_semi and all(a["score"] > 0.3 for a in pending)
    r = served.patch(f"/api/projects/1/annotations/{pending[0]['id']}",  # the reviewer accepts one
                     json={"version": pending[0]["version"], "status": "accepted"})
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    assert _count(served, source="semi", status="pending") == n_semi - 1

    export = run_job(served, "export")
    assert export["state"] == "done" and export["has_result"], export
    doc = served.get(f"{JOBS}/{export['id']}/result").json()
    assert len(doc["images"]) == 3
    assert len(doc["annotations"]) == _count(served, status="accepted")
    assert {a["source"] for a in doc["annotations"]} <= {"auto", "semi"}
    first = doc["annotations"][0]
    info = next(i for i in doc["images"] if i["id"] == first["image_id"])
    mask = segmentation_to_mask(first["segmentation"], info["height"], info["width"])
    assert int(mask.sum()) == first["area"]
    polygons = run_job(served, "export", segmentation="polygon")
    doc = served.get(f"{JOBS}/{polygons['id']}/result").json()
    assert all(isinstance(a["segmentation"], list) for a in doc["annotations"])
    per_image = {Path(i["file_name"]).stem: sum(a["image_id"] == i["id"] for a in doc["annotations"])
                 for i in doc["images"]}
    for fmt in ("sa1b", "yolo", "png"):
        job = run_job(served, "export", format=fmt)
        r = served.get(f"{JOBS}/{job['id']}/result")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip", (fmt, job)
        with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
            names = archive.namelist()
            for stem, count in per_image.items():
                if fmt == "sa1b":
                    assert len(json.loads(archive.read(f"{stem}.json"))["annotations"]) == count
                elif fmt == "yolo":
                    lines = archive.read(f"{stem}.txt").decode().splitlines()
                    assert 0 < len(lines) <= count and all(line.startswith("0 ") for line in lines)
                else:
                    assert sum(n.startswith(f"{stem}/mask_") for n in names) == count
    assert served.post(JOBS, json={"kind": "export", "params": {"format": "tiff"}}).status_code == 422


def test_import_coco(served: Served) -> None:
    image = served.get("/api/projects/1/images/1").json()
    h, w = image["height"], image["width"]
    out = served.post("/api/projects/1/images/1/predict", json={"points": [[w // 2, h // 2]], "labels": [1]}).json()
    mask = segmentation_to_mask(out["masks"][0]["rle"], h, w)
    doc = {"images": [{"id": 5, "file_name": image["path"], "height": h, "width": w}],
           "categories": [{"id": 7, "name": "thing"}],
           "annotations": [{"id": 1, "image_id": 5, "category_id": 7, "segmentation": mask_to_rle(mask)},
                           {"id": 2, "image_id": 5, "category_id": 7, "segmentation": mask_to_polygons(mask)}]}
    files = {"file": ("coco.json", json.dumps(doc).encode(), "application/json")}
    assert served.post("/api/projects/1/imports", files=files).status_code == 403  # admin only
    name = served.post("/api/projects/1/imports", "admin", files=files).json()["file"]
    assert served.post(JOBS, json={"kind": "import_coco", "params": {"file": name}}).status_code == 403
    job = run_job(served, "import_coco", "admin", file=name)
    assert job["state"] == "done", job
    anns = served.get("/api/projects/1/images/1/annotations").json()
    labels = served.get("/api/projects/1/labels").json()
    assert [lab["name"] for lab in labels] == ["thing"]
    assert len(anns) == 2 and all(a["label_id"] == labels[0]["id"] and a["source"] == "manual" for a in anns)
    assert anns[0]["area"] == int(mask.sum())

    # an import naming an image the project lacks fails and adds nothing
    doc["images"].append({"id": 6, "file_name": "missing.jpg", "height": h, "width": w})
    doc["annotations"].append({"id": 3, "image_id": 6, "segmentation": mask_to_rle(mask)})
    files = {"file": ("coco.json", json.dumps(doc).encode(), "application/json")}
    name = served.post("/api/projects/1/imports", "admin", files=files).json()["file"]
    job = run_job(served, "import_coco", "admin", file=name)
    assert job["state"] == "failed" and "missing.jpg" in job["error"]
    assert len(served.get("/api/projects/1/images/1/annotations").json()) == 2
    r = served.post("/api/projects/1/imports", "admin", files={"file": ("x.json", b"not json", "application/json")})
    assert r.status_code == 415
    r = served.post(JOBS, "admin", json={"kind": "import_coco", "params": {"file": "../samkit.db"}})
    assert r.status_code in (403, 422)


def test_bad_jobs_are_refused_and_cancel_works(served: Served) -> None:
    assert served.post(JOBS, json={"kind": "retrian"}).status_code == 422
    r = served.post(JOBS, json={"kind": "auto", "params": {"points_per_sidez": 4}})
    assert r.status_code == 422 and "points_per_sidez" in r.json()["detail"]
    r = served.post(JOBS, json={"kind": "auto", "params": {"points_per_side": 0}})
    assert r.status_code == 422
    r = served.post(JOBS, json={"kind": "auto", "params": {"points_per_side": 24}})
    job_id = r.json()["id"]
    assert served.post(f"{JOBS}/{job_id}/cancel").status_code == 200
    job = served.wait_job(job_id)
    assert job["state"] == "cancelled" and job["done"] < 3
    assert served.get(f"{JOBS}/{job_id}/result").status_code == 409


def test_restart_requeues_resumable_jobs_and_fails_the_others(tmp_path: Path) -> None:
    settings = settings_for(make_project(tmp_path))
    state = ServerState(settings)
    with state.sessions.begin() as s:  # as left by a server killed mid-job
        s.add_all([Job(project_id=1, kind="encode", state="running", done=1, total=3),
                   Job(project_id=1, kind="import_coco", params={"file": "imports/x.json"}, state="running")])
    state.close()
    app = create_app(settings_for(settings.project_dir))
    with TestClient(app) as client:
        served = Served(client, app)
        encode, imported = served.wait_job(1), served.wait_job(2)
    assert encode["state"] == "done" and encode["done"] == 3
    assert imported["state"] == "failed" and "restart" in imported["error"]
