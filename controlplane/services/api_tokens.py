"""Operator API tokens for the admin JSON API: created with a secret shown once, stored as a
SHA-256 hash, revoked (never deleted, so the audit log can name them)."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ApiToken, User, utcnow
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit

PREFIX = "sbop-"
SHOWN = len(PREFIX) + 6
TOUCH_EVERY = timedelta(minutes=5)  # last-used is a hint; no write per API call


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def describe(token: ApiToken) -> dict:
    return {"id": token.id, "name": token.name, "prefix": token.prefix, "user_id": token.user_id,
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            "created_at": token.created_at.isoformat() if token.created_at else None,
            "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
            "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None}


def create_token(actor: Actor, owner: User, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    if not owner.is_operator:
        raise ServiceError("Only operators have API tokens.", "user")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError("Name the token (1–100 characters), e.g. after the script that uses it.", "name")
    if expires_at is not None and expires_at <= utcnow():
        raise ServiceError("The expiry must be in the future (or leave it empty).", "expires_at")
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=owner.id, name=name, token_hash=_hash(secret), prefix=secret[:SHOWN], expires_at=expires_at)
    db.session.add(token)
    db.session.flush()
    audit(actor, "api_token.create", "api_token", token.id, after=describe(token))
    commit(publish=False)
    return token, secret


def token_by_id(token_id: int) -> ApiToken:
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"token {token_id}")
    return token


def revoke(actor: Actor, token: ApiToken) -> ApiToken:
    if token.revoked_at is not None:
        raise ServiceError("This token is revoked already.", status=409)
    before = describe(token)
    token.revoked_at = utcnow()
    audit(actor, "api_token.revoke", "api_token", token.id, before=before, after=describe(token))
    commit(publish=False)
    return token


def authenticate(secret: str) -> tuple[ApiToken, User] | None:
    """The token and its operator, when the secret is a usable token of an active operator."""
    if not secret or not secret.startswith(PREFIX):
        return None
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(secret)))
    now = utcnow()
    if token is None or not token.usable_at(now):
        return None
    user = db.session.get(User, token.user_id)
    if user is None or not user.is_active or not user.is_operator:
        return None
    if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
        token.last_used_at = now
        db.session.commit()
    return token, user
