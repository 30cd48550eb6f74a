"""API keys: created with a secret shown once; stored as its SHA-256 and a display prefix."""
from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import ApiKey, KeyStatus, User
from controlplane.services.base import Actor, ServiceError, audit, commit

ALPHABET = string.ascii_letters + string.digits
KEY_PREFIX = "sk-sb-"
PREFIX_SHOWN = len(KEY_PREFIX) + 4


def new_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(40))  # ~238 bits


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def describe(key: ApiKey) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "account_id": key.account_id,
        "user_id": key.user_id,
        "credit_limit_micro_usd": key.credit_limit,
        "models": list(key.models or []),
        "ip_allow": list(key.ip_allow or []),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "status": key.status,
    }


def create_key(actor: Actor, user: User, name: str = "", credit_limit_usd: str | None = None, models: list[str] | None = None,
               ip_allow: list[str] | None = None, expires_at: datetime | None = None, account_id: int | None = None) -> tuple[ApiKey, str]:
    """Returns the key row and its secret; the secret is never retrievable again."""
    name = (name or "").strip()
    if len(name) > 100:
        raise ServiceError("A key name is at most 100 characters.", "name")
    limit = None
    if credit_limit_usd not in (None, ""):
        limit = validation.usd(credit_limit_usd, "credit_limit")
    if expires_at is not None and expires_at <= datetime.now(expires_at.tzinfo):
        raise ServiceError("The expiry must be in the future.", "expires_at")
    secret = new_secret()
    key = ApiKey(
        account_id=account_id or user.account_id,
        user_id=user.id,
        name=name,
        key_hash=hash_secret(secret),
        prefix=secret[:PREFIX_SHOWN],
        credit_limit=limit,
        models=[m.strip() for m in (models or []) if m.strip()],
        ip_allow=validation.networks(ip_allow, "ip_allow"),
        expires_at=expires_at,
        status=KeyStatus.ENABLED.value,
    )
    db.session.add(key)
    db.session.flush()
    audit(actor, "key.create", "api_key", key.id, after=describe(key))
    commit()
    return key, secret


def set_key_status(actor: Actor, key: ApiKey, status: KeyStatus) -> ApiKey:
    before = describe(key)
    key.status = str(status)
    audit(actor, "key.status", "api_key", key.id, before=before, after=describe(key))
    commit()
    return key
