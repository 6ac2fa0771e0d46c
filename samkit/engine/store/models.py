"""The data engine's tables (SQLAlchemy 2 declarative models); the schema is created by the Alembic
migrations of :mod:`samkit.engine.store.migrations`, never by ``create_all``.

Masks are COCO compressed RLE (``{"size": [H, W], "counts": str}``), boxes COCO XYWH pixels.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("admin", "annotator", "viewer")
SOURCES = ("manual", "semi", "auto")
STATUSES = ("accepted", "pending", "rejected")  # semi masks wait as "pending" until reviewed
JOB_KINDS = ("encode", "auto", "semi", "export", "import_coco", "retrain")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Token(Base):
    """A bearer session token; only its SHA-256 is stored. Revoked tokens stay (revoked_at set)."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class ModelVersion(Base):
    """A model the project can predict with: a registry name or a checkpoint file, its parent and metrics."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    file: Mapped[str | None] = mapped_column(Text, default=None)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Image(Base):
    """An image file, ``path`` relative to the server's image root (never outside it)."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("project_id", "path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="new")  # new | in_progress | done
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    color: Mapped[str | None] = mapped_column(String(16), default=None)


class Annotation(Base):
    """One mask. ``version`` is the optimistic-concurrency counter (SQLAlchemy's version_id_col: an UPDATE
    of a stale row fails); ``deleted_at`` is a soft delete, so undo loses nothing."""

    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"), default=None)
    rle: Mapped[dict[str, Any]] = mapped_column()
    bbox: Mapped[list[Any]] = mapped_column()
    area: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(8), default="manual")
    status: Mapped[str] = mapped_column(String(16), default="accepted")
    score: Mapped[float | None] = mapped_column(Float, default=None)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), default=None, index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}


class AnnotationRevision(Base):
    """The state of an annotation before one change (``action``: create | update | delete), for the
    per-image undo history; ``state`` is None for a create. ``undone_at`` marks a change already undone."""

    __tablename__ = "annotation_revisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    action: Mapped[str] = mapped_column(String(8))
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class AnnotationEvent(Base):
    """How one mask was made: start/end time, number of clicks and the prompt kinds used."""

    __tablename__ = "annotation_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    annotation_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"), default=None, index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    prompt_kinds: Mapped[list[Any]] = mapped_column(default=list)


class Job(Base):
    """A background job (``kind`` in JOB_KINDS); ``state`` in JOB_STATES; ``result`` a file under the project."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    result: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
