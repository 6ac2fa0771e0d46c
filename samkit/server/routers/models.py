"""Model versions of a project: the one it predicts with and those retraining made, with their metrics."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from samkit.engine.versions import project_versions
from samkit.server.deps import DB, Id, current_user
from samkit.server.routers.projects import get_project

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(current_user)])


@router.get("/models")
def list_versions(project_id: Id, session: DB) -> list[dict]:
    """Each version: id, name (the registry model it descends from), file (under the project folder; None for a
    registry model), parent_id, metrics (a retrain's held-out NoC@90 / mIoU@1 before and after, ...), and
    whether the project predicts with it (``current``)."""
    project = get_project(project_id, session)
    return [{"id": v.id, "name": v.name, "file": v.file, "parent_id": v.parent_id, "metrics": v.metrics,
             "created_at": v.created_at.isoformat(), "current": v.id == project.model_version_id}
            for v in project_versions(session, project_id)]
