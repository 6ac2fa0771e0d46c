"""Changing annotations with optimistic concurrency and a per-image undo history.

Every change (create, update, delete) first records the annotation's earlier state as an
:class:`AnnotationRevision`; :func:`undo` restores the newest change of an image not yet undone.
A change against a stale ``version`` raises :class:`VersionConflict` (HTTP 409) and writes nothing.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from samkit.data.masks import mask_geometry, rle_to_mask
from samkit.engine.store.models import Annotation, AnnotationRevision, utcnow
from samkit.errors import SamkitError

EDITABLE = ("rle", "label_id", "status", "source", "score", "model_version_id")
_STATE = ("rle", "bbox", "area", "label_id", "status", "source", "score", "model_version_id", "deleted_at")


class VersionConflict(SamkitError):
    """The annotation changed since the client read it; ``current`` is its version now."""

    def __init__(self, current: Annotation) -> None:
        super().__init__(f"annotation {current.id} is at version {current.version}")
        self.current = current


def check_rle(rle: Any, height: int, width: int) -> np.ndarray:
    """The (H, W) mask of a COCO RLE given by a client; SamkitError unless it decodes to the image's size."""
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), (str, list)) or \
            list(rle.get("size", [])) != [height, width]:
        raise SamkitError(f"rle must be a COCO RLE {{'size': [{height}, {width}], 'counts': ...}}")
    try:
        return rle_to_mask(rle)
    except (ValueError, TypeError, KeyError) as exc:
        raise SamkitError(f"rle does not decode: {exc}") from None


def _snapshot(ann: Annotation) -> dict:
    state = {k: getattr(ann, k) for k in _STATE}
    state["deleted_at"] = ann.deleted_at.isoformat() if ann.deleted_at else None
    return state


def _record(session: Session, ann: Annotation, action: str, user_id: int | None, before: dict | None) -> None:
    session.add(AnnotationRevision(annotation_id=ann.id, image_id=ann.image_id, action=action, state=before,
                                   user_id=user_id))


def create(session: Session, image_id: int, mask: np.ndarray, user_id: int | None, **fields: Any) -> Annotation:
    """A new annotation of ``mask`` on an image (``fields``: label_id, source, status, score, ...)."""
    ann = Annotation(image_id=image_id, author_id=user_id, **mask_geometry(mask), **fields)
    session.add(ann)
    session.flush()
    _record(session, ann, "create", user_id, None)
    return ann


def _require_version(ann: Annotation, version: int) -> None:
    if ann.version != version:
        raise VersionConflict(ann)


def update(session: Session, ann: Annotation, version: int, user_id: int | None, mask: np.ndarray | None,
           **fields: Any) -> Annotation:
    """Replace the mask and/or fields of ``ann`` if it is still at ``version``."""
    _require_version(ann, version)
    before = _snapshot(ann)
    if mask is not None:
        for key, value in mask_geometry(mask).items():
            setattr(ann, key, value)
    for key, value in fields.items():
        if key not in EDITABLE:
            raise SamkitError(f"annotation field {key!r} cannot be changed")
        setattr(ann, key, value)
    ann.updated_at = utcnow()
    session.flush()
    _record(session, ann, "update", user_id, before)
    return ann


def delete(session: Session, ann: Annotation, version: int, user_id: int | None) -> Annotation:
    """Soft-delete ``ann`` if it is still at ``version``."""
    _require_version(ann, version)
    before = _snapshot(ann)
    ann.deleted_at = ann.updated_at = utcnow()
    session.flush()
    _record(session, ann, "delete", user_id, before)
    return ann


def undo(session: Session, image_id: int, user_id: int | None) -> AnnotationRevision | None:
    """Undo the newest change on the image that is not undone yet; None when there is none."""
    rev = session.scalar(select(AnnotationRevision).where(AnnotationRevision.image_id == image_id,
                                                          AnnotationRevision.undone_at.is_(None))
                         .order_by(AnnotationRevision.id.desc()).limit(1))
    if rev is None:
        return None
    ann = session.get_one(Annotation, rev.annotation_id)
    if rev.state is None:  # undo a create: soft delete
        ann.deleted_at = utcnow()
    else:
        for key, value in rev.state.items():
            setattr(ann, key, datetime.fromisoformat(value) if key == "deleted_at" and value else value)
    ann.updated_at = rev.undone_at = utcnow()
    session.flush()
    return rev
