"""Health, login / logout (bearer tokens) and user management (admin only)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy import select

from samkit.engine import accounts
from samkit.engine.store.models import User, utcnow
from samkit.errors import SamkitError
from samkit.server.deps import DB, CurrentUser, Id, SessionToken, State, require
from samkit.server.schemas import Login, NewUser
from samkit.server.views import user_view

router = APIRouter(prefix="/api")


@router.get("/health")
def health() -> dict:
    return {"ok": True}


@router.post("/auth/login")
def login(body: Login, request: Request, state: State, session: DB) -> dict:
    key = f"{request.client.host if request.client else '?'}|{body.username}"
    if state.limiter.blocked(key):
        raise HTTPException(429, "too many failed logins: wait a minute and try again")
    user = session.scalar(select(User).where(User.username == body.username))
    if user is None or not user.active or not accounts.verify_password(user.password_hash, body.password):
        state.limiter.failed(key)
        raise HTTPException(401, "wrong user name or password")
    state.limiter.succeeded(key)
    token = accounts.issue_token(session, user)
    session.commit()
    return {"token": token, "token_type": "bearer", "user": user_view(user)}


@router.post("/auth/logout")
def logout(found: SessionToken, session: DB, state: State) -> dict:
    token = session.merge(found[1])
    token.revoked_at = utcnow()
    session.commit()
    state.recent_tokens.clear()
    return {"ok": True}


@router.get("/me")
def me(user: CurrentUser) -> dict:
    return user_view(user)


@router.get("/users", dependencies=[Depends(require("admin"))])
def list_users(session: DB) -> list[dict]:
    return [user_view(u) for u in session.scalars(select(User).order_by(User.id))]


@router.post("/users", status_code=201, dependencies=[Depends(require("admin"))])
def add_user(body: NewUser, session: DB) -> dict:
    try:
        user = accounts.create_user(session, body.username, body.password, body.role)
    except SamkitError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 400, str(exc)) from None
    session.commit()
    return user_view(user)


@router.post("/users/{user_id}/deactivate", dependencies=[Depends(require("admin"))])
def deactivate(user_id: Id, session: DB, state: State) -> dict:
    """Disable a user and revoke all their tokens."""
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    user.active = False
    revoked = accounts.revoke_tokens(session, user_id)
    session.commit()
    state.recent_tokens.clear()
    return {**user_view(user), "revoked_tokens": revoked}
