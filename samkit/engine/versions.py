"""A project's model versions: the registry model it started with, then the files retraining made
(``<project>/models/v<id>.fp16.safetensors``), each with its parent and metrics. The project's
``model_version_id`` is the version it predicts with."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from samkit.engine.store.images import confined
from samkit.engine.store.models import ModelVersion, Project
from samkit.errors import SamkitError
from samkit.models.evf_sam import EvfSam
from samkit.models.load import load_model
from samkit.models.sam import Sam

MODELS_DIR = "models"


def version_file(version_id: int) -> str:
    """Where version ``version_id``'s weights live, relative to the project folder."""
    return f"{MODELS_DIR}/v{version_id}.fp16.safetensors"


def current_version(session: Session, project_id: int) -> ModelVersion:
    """The version project ``project_id`` predicts with; SamkitError when the project or version is missing."""
    project = session.get(Project, project_id)
    if project is None:
        raise SamkitError(f"no project {project_id}")
    version = session.get(ModelVersion, project.model_version_id) if project.model_version_id else None
    if version is None:
        raise SamkitError(f"project {project.name!r} has no model version")
    return version


def load_version(project_dir: Path, version: ModelVersion) -> Sam | EvfSam:
    """A fresh model object of ``version``: its file under ``project_dir``, else its registry name."""
    if version.file is None:
        return load_model(version.name, progress=False)
    path = confined(project_dir, version.file)
    if not path.is_file():
        raise SamkitError(f"model version {version.id}: its file {version.file} is missing from {project_dir}")
    return load_model(path)


def project_versions(session: Session, project_id: int) -> list[ModelVersion]:
    """Every version of the project's lineage (the first one and all retrained from it), by id."""
    version: ModelVersion | None = current_version(session, project_id)
    while version is not None and version.parent_id is not None:
        version = session.get(ModelVersion, version.parent_id)
    assert version is not None
    children: dict[int, list[ModelVersion]] = {}
    for v in session.scalars(select(ModelVersion).where(ModelVersion.parent_id.is_not(None))):
        children.setdefault(v.parent_id, []).append(v)  # type: ignore[arg-type]  # not None (the where clause)
    found, todo = [], [version]
    while todo:
        v = todo.pop()
        found.append(v)
        todo.extend(children.get(v.id, []))
    return sorted(found, key=lambda v: v.id)
