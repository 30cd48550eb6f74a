"""Rate limits and upstream capacity: requests per minute, tokens per minute and concurrent
requests of an API key, a user, a group, a channel, or each key of a channel. Empty or 0 is unlimited.

Validated here, audited and published like every write; the relay enforces them from the snapshot.
"""
from __future__ import annotations

from controlplane import validation
from controlplane.models import ApiKey, Channel, Group, User
from controlplane.services.base import Actor, ServiceError, audit, commit

FIELDS = ("rpm", "tpm", "concurrency")
UNCHANGED = object()


def clean(value, field: str) -> int | None:
    """None, "" and 0 mean unlimited; anything else is a positive whole number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = validation.non_negative_int(value, field)
    return number or None


def columns(target, each_key: bool) -> tuple[str, str, str]:
    if each_key:
        if not isinstance(target, Channel):
            raise ServiceError("Per-key capacity applies to channels only.", "each_key")
        return ("key_rpm", "key_tpm", "key_concurrency")
    if not isinstance(target, (ApiKey, User, Group, Channel)):
        raise ServiceError("Limits apply to API keys, users, groups and channels.")
    return FIELDS


def describe(target, each_key: bool = False) -> dict:
    return {f: getattr(target, c) for f, c in zip(FIELDS, columns(target, each_key), strict=True)}


def set_limits(actor: Actor, target, *, each_key: bool = False, rpm=UNCHANGED, tpm=UNCHANGED, concurrency=UNCHANGED) -> dict:
    """Change the limits given (others stay); returns the target's limits after the change."""
    names = columns(target, each_key)
    wanted = {f: clean(v, f) for f, v in zip(FIELDS, (rpm, tpm, concurrency), strict=True) if v is not UNCHANGED}
    before = describe(target, each_key)
    for field, value in wanted.items():
        setattr(target, names[FIELDS.index(field)], value)
    after = describe(target, each_key)
    kind = type(target).__name__.lower()
    audit(actor, f"{kind}.limits", kind, target.id, before={"each_key": each_key, **before}, after={"each_key": each_key, **after})
    commit()
    return after
