"""Annotations of an image: list, save, replace (with the version read: 409 otherwise), soft delete,
the per-image history and undo. Saving may carry the mask's timing event (clicks, prompt kinds)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from samkit.engine.store import annotations as ops
from samkit.engine.store.models import Annotation, AnnotationEvent, AnnotationRevision, Image, Label, User
from samkit.errors import SamkitError
from samkit.server.deps import DB, Id, Version, Writer, current_user, project_image
from samkit.server.schemas import AnnotationChange, Event, NewAnnotation
from samkit.server.views import annotation_view

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(current_user)])


def _annotation(project_id: Id, annotation_id: Id, session: Session) -> tuple[Annotation, Image]:
    ann = session.get(Annotation, annotation_id)
    image = session.get(Image, ann.image_id) if ann is not None else None
    if ann is None or image is None or image.project_id != project_id:
        raise HTTPException(404, f"no annotation {annotation_id} in project {project_id}")
    return ann, image


def _mask(rle: dict, image: Image):  # noqa: ANN202 (np.ndarray)
    try:
        return ops.check_rle(rle, image.height, image.width)
    except SamkitError as exc:
        raise HTTPException(422, str(exc)) from None


def _check_label(session: Session, project_id: int, label_id: int | None) -> None:
    label = session.get(Label, label_id) if label_id is not None else None
    if label_id is not None and (label is None or label.project_id != project_id):
        raise HTTPException(422, f"no label {label_id} in project {project_id}")


def _event(session: Session, ann: Annotation, user: User, event: Event | None) -> None:
    if event is not None:
        session.add(AnnotationEvent(annotation_id=ann.id, image_id=ann.image_id, user_id=user.id,
                                    started_at=event.started_at, ended_at=event.ended_at, clicks=event.clicks,
                                    prompt_kinds=list(event.prompt_kinds)))


@router.get("/images/{image_id}/annotations")
def list_annotations(project_id: Id, image_id: Id, session: DB, include_deleted: bool = False) -> list[dict]:
    project_image(project_id, image_id, session)
    query = select(Annotation).where(Annotation.image_id == image_id)
    if not include_deleted:
        query = query.where(Annotation.deleted_at.is_(None))
    return [annotation_view(a) for a in session.scalars(query.order_by(Annotation.id))]


@router.post("/images/{image_id}/annotations", status_code=201)
def save(project_id: Id, image_id: Id, body: NewAnnotation, user: Writer,
         session: DB) -> dict:
    image = project_image(project_id, image_id, session)
    _check_label(session, project_id, body.label_id)
    ann = ops.create(session, image.id, _mask(body.rle, image), user.id, label_id=body.label_id,
                     source=body.source, score=body.score)
    _event(session, ann, user, body.event)
    session.commit()
    return annotation_view(ann)


@router.get("/annotations/{annotation_id}")
def get_annotation(project_id: Id, annotation_id: Id, session: DB) -> dict:
    return annotation_view(_annotation(project_id, annotation_id, session)[0])


@router.patch("/annotations/{annotation_id}")
def replace(project_id: Id, annotation_id: Id, body: AnnotationChange, user: Writer,
            session: DB) -> dict:
    """Change the mask, label or review status of an annotation last read at ``body.version``."""
    ann, image = _annotation(project_id, annotation_id, session)
    _check_label(session, project_id, body.label_id)
    mask = _mask(body.rle, image) if body.rle is not None else None
    fields = {k: v for k, v in body.model_dump(include={"label_id", "status"}, exclude_unset=True).items()}
    ops.update(session, ann, body.version, user.id, mask, **fields)
    _event(session, ann, user, body.event)
    session.commit()
    return annotation_view(ann)


@router.delete("/annotations/{annotation_id}")
def delete(project_id: Id, annotation_id: Id, version: Version, user: Writer,
           session: DB) -> dict:
    ann, _ = _annotation(project_id, annotation_id, session)
    ops.delete(session, ann, version, user.id)
    session.commit()
    return annotation_view(ann)


@router.get("/images/{image_id}/history")
def history(project_id: Id, image_id: Id, session: DB) -> list[dict]:
    """Every change on the image, newest first (``state``: the annotation before it; None for a create)."""
    project_image(project_id, image_id, session)
    revs = session.scalars(select(AnnotationRevision).where(AnnotationRevision.image_id == image_id)
                           .order_by(AnnotationRevision.id.desc()))
    return [{"id": r.id, "annotation_id": r.annotation_id, "action": r.action, "state": r.state,
             "user_id": r.user_id, "created_at": r.created_at.isoformat(), "undone": r.undone_at is not None}
            for r in revs]


@router.post("/images/{image_id}/undo")
def undo(project_id: Id, image_id: Id, user: Writer,
         session: DB) -> dict:
    """Undo the newest change on the image not undone yet (404 when there is none)."""
    project_image(project_id, image_id, session)
    rev = ops.undo(session, image_id, user.id)
    if rev is None:
        raise HTTPException(404, "nothing to undo on this image")
    session.commit()
    return {"undone": rev.action, "annotation": annotation_view(session.get_one(Annotation, rev.annotation_id))}
