"""User accounts: argon2id password hashing (memory-hard), revocable bearer tokens stored as SHA-256,
a first admin, and a sliding-window limit on failed logins."""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from samkit.engine.store.models import ROLES, Token, User, utcnow
from samkit.errors import SamkitError

TOKEN_TTL = timedelta(days=7)
_hasher = PasswordHasher()  # argon2id, 64 MiB, t=3 (argon2-cffi's RFC 9106 low-memory profile)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(session: Session, username: str, password: str, role: str) -> User:
    """A new active user; SamkitError for an unknown role, a short password or a taken name."""
    if role not in ROLES:
        raise SamkitError(f"role must be one of {ROLES}, got {role!r}")
    if len(password) < 8:
        raise SamkitError("password must have at least 8 characters")
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise SamkitError(f"user {username!r} exists already")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def ensure_admin(session: Session, password: str | None) -> str | None:
    """Create the ``admin`` user when there are no users; returns the generated password (to print once)
    when ``password`` is None, else None."""
    if session.scalar(select(User.id).limit(1)) is not None:
        return None
    chosen = password or secrets.token_urlsafe(12)
    create_user(session, "admin", chosen, "admin")
    return None if password else chosen


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user: User) -> str:
    """A new random bearer token for ``user`` (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    session.add(Token(token_hash=_digest(token), user_id=user.id, expires_at=utcnow() + TOKEN_TTL))
    return token


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes: they were stored as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def user_for_token(session: Session, token: str) -> tuple[User, Token] | None:
    """The active user and token row of a live (not revoked, not expired) token."""
    found = session.execute(select(User, Token).join(Token, Token.user_id == User.id)
                            .where(Token.token_hash == _digest(token))).first()  # one query per request
    if found is None:
        return None
    user, row = found
    return (user, row) if still_valid(user, row) else None


def still_valid(user: User, token: Token) -> bool:
    """Whether a token row read earlier is still good: not revoked, not expired, its user active."""
    return token.revoked_at is None and _aware(token.expires_at) > utcnow() and user.active


def revoke_tokens(session: Session, user_id: int) -> int:
    """Revoke every live token of a user; returns how many."""
    rows = session.scalars(select(Token).where(Token.user_id == user_id, Token.revoked_at.is_(None))).all()
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)


class LoginLimiter:
    """At most ``attempts`` failed logins per key (client address + user name) in ``window`` seconds."""

    def __init__(self, attempts: int = 5, window: float = 60.0) -> None:
        self.attempts, self.window = attempts, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def blocked(self, key: str) -> bool:
        with self._lock:
            return len(self._recent(key, time.monotonic())) >= self.attempts

    def failed(self, key: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(key, now).append(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
