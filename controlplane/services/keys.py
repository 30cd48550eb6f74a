"""API keys: created with a secret shown once; stored as its SHA-256 and a display prefix."""
from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import ApiKey, KeyDecider, KeyStatus, User, UserStatus
from controlplane.services.base import Actor, ServiceError, audit, commit
from relay.keys import MAX_MODELS, MAX_NETWORKS  # what a key record carries

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
        "daily_budget_micro_usd": key.daily_budget,
        "monthly_budget_micro_usd": key.monthly_budget,
        "models": list(key.models or []),
        "ip_allow": list(key.ip_allow or []),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "status": key.status,
        "disabled_by": key.disabled_by,
    }


def _limit(value, field: str) -> int | None:
    return None if value in (None, "") else validation.usd(value, field)


def _limits(credit_limit_usd, daily_budget_usd, monthly_budget_usd) -> dict:
    return {"credit_limit": _limit(credit_limit_usd, "credit_limit"), "daily_budget": _limit(daily_budget_usd, "daily_budget"),
            "monthly_budget": _limit(monthly_budget_usd, "monthly_budget")}


def _models(models: list[str] | None, allowed: set[str] | None) -> list[str]:
    """The allow-list, refused when it names a model outside `allowed` (what the group may use)."""
    chosen = list(dict.fromkeys(m.strip() for m in (models or []) if m.strip()))
    if len(chosen) > MAX_MODELS:
        raise ServiceError(f"A key's model list holds at most {MAX_MODELS} models.", "models")
    if allowed is not None:
        outside = [m for m in chosen if m not in allowed]
        if outside:
            raise ServiceError(f"Your group cannot use {', '.join(outside)}.", "models")
    return chosen


def _networks(values: list[str] | None) -> list[str]:
    found = validation.networks(values, "ip_allow")
    if len(found) > MAX_NETWORKS:
        raise ServiceError(f"A key's address list holds at most {MAX_NETWORKS} addresses or ranges.", "ip_allow")
    return found


def _check_name_and_expiry(name: str, expires_at: datetime | None, now: datetime | None = None) -> str:
    name = (name or "").strip()
    if len(name) > 100:
        raise ServiceError("A key name is at most 100 characters.", "name")
    if expires_at is not None and expires_at <= (now or datetime.now(expires_at.tzinfo)):
        raise ServiceError("The expiry must be in the future.", "expires_at")
    return name


def create_key(actor: Actor, user: User, name: str = "", credit_limit_usd: str | None = None, models: list[str] | None = None,
               ip_allow: list[str] | None = None, expires_at: datetime | None = None, account_id: int | None = None,
               daily_budget_usd: str | None = None, monthly_budget_usd: str | None = None,
               allowed_models: set[str] | None = None) -> tuple[ApiKey, str]:
    """Returns the key row and its secret; the secret is never retrievable again."""
    if user.status == UserStatus.CLOSED.value:
        raise ServiceError("This account is closed: it gets no new keys.", status=409)
    name = _check_name_and_expiry(name, expires_at)
    limits = _limits(credit_limit_usd, daily_budget_usd, monthly_budget_usd)
    secret = new_secret()
    key = ApiKey(
        account_id=account_id or user.account_id,
        user_id=user.id,
        name=name,
        key_hash=hash_secret(secret),
        prefix=secret[:PREFIX_SHOWN],
        models=_models(models, allowed_models),
        ip_allow=_networks(ip_allow),
        expires_at=expires_at,
        status=KeyStatus.ENABLED.value,
        **limits,
    )
    db.session.add(key)
    db.session.flush()
    audit(actor, "key.create", "api_key", key.id, after=describe(key))
    commit()
    return key, secret


def update_key(actor: Actor, key: ApiKey, *, name: str = "", credit_limit_usd: str | None = None, daily_budget_usd: str | None = None,
               monthly_budget_usd: str | None = None, models: list[str] | None = None, ip_allow: list[str] | None = None,
               expires_at: datetime | None = None, allowed_models: set[str] | None = None) -> ApiKey:
    """Change a key's settings (never its secret); the relay has them at the next snapshot."""
    if key.status == KeyStatus.DELETED.value:
        raise ServiceError("A deleted key cannot be changed.", status=409)
    before = describe(key)
    fields = dict(name=_check_name_and_expiry(name, expires_at), models=_models(models, allowed_models),
                  ip_allow=_networks(ip_allow), expires_at=expires_at,
                  **_limits(credit_limit_usd, daily_budget_usd, monthly_budget_usd))
    for field, value in fields.items():
        setattr(key, field, value)
    audit(actor, "key.update", "api_key", key.id, before=before, after=describe(key))
    commit()
    return key


def delete_key(actor: Actor, key: ApiKey) -> ApiKey:
    """Deleted keys stay as rows (their request logs name them) but never reach the relay again."""
    return set_key_status(actor, key, KeyStatus.DELETED)


def set_key_status(actor: Actor, key: ApiKey, status: KeyStatus, by: KeyDecider = KeyDecider.OWNER) -> ApiKey:
    """Enable, disable or delete a key on behalf of its owner (the user console) or an operator.
    A key an operator disabled stays disabled until an operator enables it."""
    if key.status == KeyStatus.DELETED.value:
        raise ServiceError("A deleted key cannot be changed.", status=409)
    if by == KeyDecider.OWNER and key.disabled_by == KeyDecider.OPERATOR.value and status != KeyStatus.DELETED:
        raise ServiceError("An operator disabled this key; only an operator can enable it again. Contact support.", "status", status=403)
    before = describe(key)
    key.status = str(status)
    if status == KeyStatus.DISABLED:
        key.disabled_by = str(by)
    elif status == KeyStatus.ENABLED:
        key.disabled_by = None
    audit(actor, "key.status", "api_key", key.id, before=before, after=describe(key))
    commit()
    return key
