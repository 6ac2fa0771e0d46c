"""Masks per image of a project (read only), for the image list of the browser tool."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import func, select

from samkit.engine.store.models import Annotation, Image
from samkit.server.deps import DB, Id, current_user
from samkit.server.routers.projects import get_project

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(current_user)])


@router.get("/image_counts")
def image_counts(project_id: Id, session: DB) -> dict[str, dict[str, int]]:
    """``{image_id: {"masks": n, "pending": m}}`` over live annotations (not deleted, not rejected);
    images without any are left out."""
    get_project(project_id, session)
    rows = session.execute(
        select(Annotation.image_id, Annotation.status, func.count())
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.project_id == project_id, Annotation.deleted_at.is_(None), Annotation.status != "rejected")
        .group_by(Annotation.image_id, Annotation.status))
    out: dict[str, dict[str, int]] = {}
    for image_id, status, count in rows:
        entry = out.setdefault(str(image_id), {"masks": 0, "pending": 0})
        entry["masks"] += count
        if status == "pending":
            entry["pending"] += count
    return out
