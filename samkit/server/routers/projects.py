"""Projects (read), their labels and their annotation statistics."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from samkit.engine.stats import project_stats
from samkit.engine.store.models import Label, ModelVersion, Project
from samkit.server.deps import DB, WRITERS, Id, current_user, require
from samkit.server.schemas import NewLabel

router = APIRouter(prefix="/api/projects", dependencies=[Depends(current_user)])


def get_project(project_id: Id, session: Session) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise HTTPException(404, f"no project {project_id}")
    return project


@router.get("")
def list_projects(session: DB) -> list[dict]:
    out = []
    for p in session.scalars(select(Project).order_by(Project.id)):
        version = session.get(ModelVersion, p.model_version_id) if p.model_version_id else None
        out.append({"id": p.id, "name": p.name, "model_version": {"id": version.id, "name": version.name}
                    if version else None})
    return out


@router.get("/{project_id}/labels")
def list_labels(project_id: Id, session: DB) -> list[dict]:
    get_project(project_id, session)
    return [{"id": lab.id, "name": lab.name, "color": lab.color}
            for lab in session.scalars(select(Label).where(Label.project_id == project_id).order_by(Label.id))]


@router.post("/{project_id}/labels", status_code=201, dependencies=[Depends(require(*WRITERS))])
def add_label(project_id: Id, body: NewLabel, session: DB) -> dict:
    get_project(project_id, session)
    label = Label(project_id=project_id, name=body.name, color=body.color)
    session.add(label)
    try:
        session.commit()
    except IntegrityError:
        raise HTTPException(409, f"label {body.name!r} exists already") from None
    return {"id": label.id, "name": label.name, "color": label.color}


@router.get("/{project_id}/stats")
def stats(project_id: Id, session: DB) -> dict:
    """The paper's metrics (seconds and clicks per mask, masks per image) per stage, annotator and day:
    :func:`samkit.engine.stats.project_stats`."""
    get_project(project_id, session)
    return project_stats(session, project_id)
