"""Rows as the JSON the API returns."""
from __future__ import annotations

from samkit.engine.store.models import Annotation, Image, Job, User


def user_view(u: User) -> dict:
    return {"id": u.id, "username": u.username, "role": u.role, "active": u.active}


def image_view(i: Image) -> dict:
    return {"id": i.id, "path": i.path, "sha256": i.sha256, "size_bytes": i.size_bytes, "width": i.width,
            "height": i.height, "status": i.status}


def annotation_view(a: Annotation) -> dict:
    return {"id": a.id, "image_id": a.image_id, "label_id": a.label_id, "rle": a.rle, "bbox": a.bbox,
            "area": a.area, "source": a.source, "status": a.status, "score": a.score,
            "model_version_id": a.model_version_id, "author_id": a.author_id, "job_id": a.job_id,
            "created_at": a.created_at.isoformat(), "updated_at": a.updated_at.isoformat(),
            "deleted": a.deleted_at is not None, "version": a.version}


def job_view(j: Job) -> dict:
    return {"id": j.id, "kind": j.kind, "params": j.params, "state": j.state, "done": j.done, "total": j.total,
            "cancel_requested": j.cancel_requested, "error": j.error, "has_result": j.result is not None,
            "created_at": j.created_at.isoformat(),
            "finished_at": j.finished_at.isoformat() if j.finished_at else None}
