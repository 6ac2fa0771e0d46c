"""FastAPI dependencies: the server state, a database session per request, the signed-in user, roles."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from samkit.engine import accounts
from samkit.engine.store.models import Image, Token, User
from samkit.errors import SamkitError
from samkit.server.schemas import MAX_ID
from samkit.server.state import ServerState

WRITERS = ("admin", "annotator")
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
Version = Annotated[int, Query(ge=1, le=MAX_ID)]
_bearer = HTTPBearer(auto_error=False)


# Dependencies without I/O are ``async def``: FastAPI runs every plain ``def`` dependency in its thread pool, and
# each such hand-over costs about as much as a database query on a busy 2-core machine (issue 18's round trip).


def _sync_model(state: ServerState) -> None:
    try:
        state.sync_model()
    except SamkitError as exc:  # e.g. a version's file deleted by hand: keep serving the loaded model
        logging.getLogger("samkit.server").error("cannot switch the model version: %s", exc)


async def server(request: Request) -> ServerState:
    """The server's state, predicting with the project's current model version (see ``sync_model``; its
    database look-up runs in the thread pool, at most once per ``SYNC_INTERVAL_S``)."""
    state: ServerState = request.app.state.samkit
    if state.sync_due():
        await run_in_threadpool(_sync_model, state)
    return state


State = Annotated[ServerState, Depends(server)]


async def db(state: State) -> AsyncIterator[Session]:
    """A database session for the request; it connects at its first query (in the thread pool) and is closed
    after the response (in the thread pool when a transaction is still open: the rollback is I/O)."""
    session = state.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


DB = Annotated[Session, Depends(db)]


def _token_lookup(state: ServerState, token: str) -> tuple[User, Token] | None:
    with state.sessions() as session:
        return accounts.user_for_token(session, token)


async def session_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                        state: State) -> tuple[User, Token]:
    """The signed-in user and token row (detached: read-only here), from the database at most once per
    ``samkit.server.recent.RECENT_TTL_S`` per token; expiry and revocation are checked on every request."""
    if creds is None:
        raise _unauthorized("not signed in: send 'Authorization: Bearer <token>' (POST /api/auth/login)")
    found = state.recent_tokens.get(creds.credentials)
    if found is None:
        found = await run_in_threadpool(_token_lookup, state, creds.credentials)
        if found is not None:
            state.recent_tokens.put(creds.credentials, found)
    if found is None or not accounts.still_valid(*found):
        raise _unauthorized("invalid, expired or revoked token")
    return found


SessionToken = Annotated[tuple[User, Token], Depends(session_token)]


async def current_user(found: SessionToken) -> User:
    return found[0]


CurrentUser = Annotated[User, Depends(current_user)]


def require(*roles: str) -> Callable[[User], Coroutine[None, None, User]]:
    """A dependency that lets only users with one of ``roles`` through (403 otherwise)."""

    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise HTTPException(403, f"role {user.role!r} may not do this (needs {' or '.join(roles)})")
        return user

    return check


Writer = Annotated[User, Depends(require(*WRITERS))]


def recent_project_image(state: ServerState, project_id: int, image_id: int, session: Session) -> Image:
    """:func:`project_image`, from ``state.recent_images`` when it was read in the last second (a click's
    path: the row is detached, read-only)."""
    image = state.recent_images.get((project_id, image_id))
    if image is None:
        image = project_image(project_id, image_id, session)
        state.recent_images.put((project_id, image_id), image)
    return image


def project_image(project_id: int, image_id: int, session: Session) -> Image:
    image = session.get(Image, image_id)
    if image is None or image.project_id != project_id:
        raise HTTPException(404, f"no image {image_id} in project {project_id}")
    return image
