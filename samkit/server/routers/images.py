"""Images: list, the annotation queue (pre-encoding its next images), the file, uploads, status, and
the image embedding as fp16 bytes for decoding clicks in the browser."""
from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import select

from samkit.engine.embeddings import features_fp16
from samkit.engine.store.images import ImageTooLarge, PathEscape, check_image, confined, register, sha256_file
from samkit.engine.store.models import Image
from samkit.errors import ImageError
from samkit.server.deps import DB, WRITERS, Id, State, current_user, project_image, require
from samkit.server.routers.projects import get_project
from samkit.server.schemas import MAX_ID, ImageStatus
from samkit.server.state import ServerState
from samkit.server.views import image_view

router = APIRouter(prefix="/api/projects/{project_id}", dependencies=[Depends(current_user)])
UPLOADS = "uploads"
_CHUNK = 1 << 20


def image_file(state: ServerState, image: Image) -> Path:
    try:
        return confined(state.settings.images_dir, image.path)
    except PathEscape as exc:
        raise HTTPException(403, str(exc)) from None


@router.get("/images")
def list_images(project_id: Id, session: DB, offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100, status: str | None = None) -> list[dict]:
    get_project(project_id, session)
    query = select(Image).where(Image.project_id == project_id)
    if status is not None:
        query = query.where(Image.status == status)
    rows = session.scalars(query.order_by(Image.id).offset(offset).limit(limit))
    return [image_view(i) for i in rows]


@router.get("/queue")
def queue(project_id: Id, state: State, session: DB, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> list[dict]:
    """Images not done yet, in order; the first ``prefetch`` are encoded in the background now."""
    get_project(project_id, session)
    rows = session.scalars(select(Image).where(Image.project_id == project_id, Image.status != "done")
                           .order_by(Image.id).limit(limit)).all()
    state.embeddings.prefetch([(image_file(state, i), i.sha256) for i in rows[:state.settings.prefetch]])
    return [image_view(i) for i in rows]


@router.get("/images/{image_id}")
def get_image(project_id: Id, image_id: Id, session: DB) -> dict:
    return image_view(project_image(project_id, image_id, session))


@router.get("/images/{image_id}/file")
def get_image_file(project_id: Id, image_id: Id, state: State,
                   session: DB) -> FileResponse:
    return FileResponse(image_file(state, project_image(project_id, image_id, session)))


@router.put("/images/{image_id}/status", dependencies=[Depends(require(*WRITERS))])
def set_status(project_id: Id, image_id: Id, body: ImageStatus, session: DB) -> dict:
    image = project_image(project_id, image_id, session)
    image.status = body.status
    session.commit()
    return image_view(image)


@router.get("/images/{image_id}/embedding", dependencies=[Depends(require(*WRITERS))])
def embedding(project_id: Id, image_id: Id, state: State,
              session: DB) -> Response:
    """Raw little-endian fp16 features; shape and sizes in the X-Embedding-* headers."""
    image = project_image(project_id, image_id, session)
    pred = state.embeddings.get(image_file(state, image), image.sha256)
    data, shape = features_fp16(pred)
    headers = {"X-Embedding-Shape": ",".join(map(str, shape)), "X-Embedding-Dtype": "float16",
               "X-Original-Size": ",".join(map(str, pred.original_size or ())),
               "X-Input-Size": ",".join(map(str, pred.input_size or ())), "X-Model-Version": state.embeddings.tag}
    return Response(data, media_type="application/octet-stream", headers=headers)


def _safe_name(name: str | None) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name or "upload").name)[-100:].lstrip(".")
    return stem or "upload"


@router.post("/images", status_code=201, dependencies=[Depends(require(*WRITERS))])
async def upload(project_id: Id, file: UploadFile, request: Request, state: State,
                 session: DB) -> dict:
    """Add an image: at most ``max_upload_bytes`` and ``max_pixels`` (checked before decoding), a real image."""
    get_project(project_id, session)
    limit = state.settings.max_upload_bytes
    if int(request.headers.get("content-length") or 0) > limit + _CHUNK:
        raise HTTPException(413, f"upload too large: more than {limit:,} bytes")
    folder = state.settings.images_dir / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-{secrets.token_hex(8)}"
    try:
        size = 0
        with tmp.open("wb") as out:
            while chunk := await file.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"upload too large: more than {limit:,} bytes")
                out.write(chunk)
        try:
            check_image(tmp, state.settings.max_pixels)
        except ImageTooLarge as exc:
            raise HTTPException(413, str(exc).replace(tmp.name, _safe_name(file.filename))) from None
        except ImageError as exc:
            raise HTTPException(415, str(exc).replace(tmp.name, _safe_name(file.filename))) from None
        final = folder / f"{sha256_file(tmp)[:16]}_{_safe_name(file.filename)}"
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)
    image = register(session, project_id, state.settings.images_dir, f"{UPLOADS}/{final.name}",
                     state.settings.max_pixels)
    session.commit()
    return image_view(image)
