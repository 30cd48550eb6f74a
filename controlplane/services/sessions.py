"""Console sessions recorded server-side: started at sign-in, checked on every request, listed on
the account page, ended one by one or all at once ("log out everywhere").

The browser's session cookie carries a random token (`sid`); the table keeps its SHA-256. Flask-Login
still checks `users.session_version`, so bumping it ends every session even without this table.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import request, session
from sqlalchemy import select, update

from controlplane.extensions import db
from controlplane.models import User, UserSession, utcnow
from controlplane.services.base import Actor, NotFound, audit, commit

SESSION_KEY = "sid"
TOUCH_EVERY = timedelta(minutes=1)  # last-seen precision; avoids a write per request


_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("HeadlessChrome/", "Headless Chrome"), ("Chrome/", "Chrome"),
             ("Safari/", "Safari"), ("curl/", "curl"))
_SYSTEMS = (("Windows", "Windows"), ("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"), ("Mac OS X", "macOS"), ("Linux", "Linux"))


def device(user_agent: str | None) -> str:
    """"Chrome on macOS" from a User-Agent header: enough to recognise one's own sessions."""
    agent = user_agent or ""
    browser = next((name for marker, name in _BROWSERS if marker in agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(user: User) -> UserSession:
    """Record a new sign-in and put its token in the (freshly cleared) session. The caller commits."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = UserSession(user_id=user.id, token_hash=_hash(token), ip=request.remote_addr,
                      user_agent=(request.user_agent.string or "")[:255] or None, created_at=now, last_seen_at=now)
    db.session.add(row)
    session[SESSION_KEY] = token
    return row


def current(user_id: int) -> UserSession | None:
    token = session.get(SESSION_KEY)
    if not token:
        return None
    return db.session.scalar(select(UserSession).where(
        UserSession.token_hash == _hash(token), UserSession.user_id == user_id, UserSession.revoked_at.is_(None)))


def is_live(user: User) -> bool:
    """Whether this browser's session is still one the user has not ended; refreshes last-seen."""
    row = current(user.id)
    if row is None:
        return False
    now = utcnow()
    if now - row.last_seen_at > TOUCH_EVERY:
        # Its own short transaction: the loader runs before the view, which may roll back its own work.
        with db.engine.begin() as conn:
            conn.execute(update(UserSession).where(UserSession.id == row.id).values(last_seen_at=now))
    return True


def end_current() -> None:
    """Sign-out: end this browser's session record (the caller clears the cookie)."""
    token = session.get(SESSION_KEY)
    if token:
        db.session.execute(update(UserSession).where(UserSession.token_hash == _hash(token), UserSession.revoked_at.is_(None))
                           .values(revoked_at=utcnow()))
        db.session.commit()


def active(user: User) -> list[UserSession]:
    return list(db.session.scalars(select(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
                                   .order_by(UserSession.last_seen_at.desc())))


def revoke(actor: Actor, user: User, session_id: int) -> None:
    """End one of the user's own sessions; another user's session id is not found."""
    row = db.session.scalar(select(UserSession).where(UserSession.id == session_id, UserSession.user_id == user.id,
                                                      UserSession.revoked_at.is_(None)))
    if row is None:
        raise NotFound("session")
    row.revoked_at = utcnow()
    audit(actor, "session.revoke", "user", user.id, after={"session_id": row.id})
    commit(publish=False)


def revoke_all(actor: Actor, user: User, keep_current: bool = False) -> int:
    """End every session (or every other one). Bumping session_version ends cookies too."""
    keep = current(user.id) if keep_current else None
    query = update(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
    if keep is not None:
        query = query.where(UserSession.id != keep.id)
    ended = db.session.execute(query.values(revoked_at=utcnow())).rowcount
    user.session_version += 1
    audit(actor, "session.revoke_all", "user", user.id, after={"ended": ended, "kept_current": keep is not None})
    commit(publish=False)
    return ended
