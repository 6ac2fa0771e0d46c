"""Jobs: create (the worker thread runs them in order), list, progress, cancel, download the result;
COCO files to import are uploaded first (``POST .../imports``)."""
from __future__ import annotations

import json
import secrets

from fastapi import APIRouter, Depends, HTTPException, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from samkit.engine.jobs import check_params
from samkit.engine.store.images import confined
from samkit.engine.store.models import Job
from samkit.errors import SamkitError
from samkit.io_utils import atomic_path
from samkit.server.deps import DB, WRITERS, Id, State, Writer, current_user, require
from samkit.server.routers.projects import get_project
from samkit.server.schemas import NewJob
from samkit.server.views import job_view

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(current_user)])
ADMIN_ONLY = ("import_coco", "retrain")  # retrain: the model of every annotator changes
MAX_IMPORT_BYTES = 256 * 1024 * 1024


def _job(project_id: Id, job_id: Id, session: Session) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project_id:
        raise HTTPException(404, f"no job {job_id} in project {project_id}")
    return job


@router.post("/jobs", status_code=201)
def create_job(project_id: Id, body: NewJob, user: Writer,
               state: State, session: DB) -> dict:
    get_project(project_id, session)
    if body.kind in ADMIN_ONLY and user.role != "admin":
        raise HTTPException(403, f"only an admin may start a {body.kind} job")
    try:
        params = check_params(body.kind, dict(body.params))
        if body.kind == "import_coco":
            confined(state.settings.project_dir / "imports", params["file"])
            params["file"] = f"imports/{params['file']}"
    except SamkitError as exc:
        raise HTTPException(422, str(exc)) from None
    job = Job(project_id=project_id, kind=body.kind, params=params, created_by=user.id)
    session.add(job)
    session.commit()
    state.jobs.wake()
    return job_view(job)


@router.get("/jobs")
def list_jobs(project_id: Id, session: DB) -> list[dict]:
    return [job_view(j) for j in session.scalars(select(Job).where(Job.project_id == project_id)
                                                 .order_by(Job.id.desc()).limit(200))]


@router.get("/jobs/{job_id}")
def get_job(project_id: Id, job_id: Id, session: DB) -> dict:
    return job_view(_job(project_id, job_id, session))


@router.post("/jobs/{job_id}/cancel", dependencies=[Depends(require(*WRITERS))])
def cancel(project_id: Id, job_id: Id, session: DB) -> dict:
    """Ask a job to stop (it stops between two images); a queued job is cancelled at once."""
    job = _job(project_id, job_id, session)
    if job.state == "queued":
        job.state = "cancelled"
    job.cancel_requested = True
    session.commit()
    return job_view(job)


@router.get("/jobs/{job_id}/result")
def download(project_id: Id, job_id: Id, state: State,
             session: DB) -> FileResponse:
    job = _job(project_id, job_id, session)
    if job.state != "done" or job.result is None:
        raise HTTPException(409, f"job {job_id} has no result (state {job.state})")
    path = confined(state.settings.project_dir, job.result)
    return FileResponse(path, filename=path.name)  # media type from the suffix (.json, .zip)


@router.post("/imports", status_code=201, dependencies=[Depends(require("admin"))])
async def upload_import(project_id: Id, file: UploadFile, state: State) -> dict:
    """Store a COCO JSON to import; returns its name for an ``import_coco`` job's ``file``."""
    data = await file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"import file larger than {MAX_IMPORT_BYTES:,} bytes")
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise ValueError("no 'images' list")
    except ValueError as exc:
        raise HTTPException(415, f"not a COCO JSON file: {exc}") from None
    name = f"{secrets.token_hex(8)}.json"
    with atomic_path(state.settings.project_dir / "imports" / name) as tmp:
        tmp.write_bytes(data)
    return {"file": name}
