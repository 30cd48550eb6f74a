"""Bans of users, organisations, API keys, and IP addresses or CIDR ranges.

A ban is a row with reason, expiry, who and when; lifting keeps the row (with who lifted it) so the
history stays. Committing publishes the snapshot, and the relay refuses the subject from then on.
"""
from __future__ import annotations

import ipaddress
from datetime import datetime

from sqlalchemy import or_, select

from controlplane.extensions import db
from controlplane.models import Account, AccountKind, ApiKey, Ban, BanKind, User, utcnow
from controlplane.queries.pagination import row_id
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit

KINDS = tuple(k.value for k in BanKind)


def describe(ban: Ban) -> dict:
    return {
        "id": ban.id,
        "kind": ban.kind,
        "subject": ban.subject,
        "reason": ban.reason,
        "expires_at": ban.expires_at.isoformat() if ban.expires_at else None,
        "created_by": ban.created_by,
        "created_at": ban.created_at.isoformat() if ban.created_at else None,
        "lifted_at": ban.lifted_at.isoformat() if ban.lifted_at else None,
        "lifted_by": ban.lifted_by,
    }


def _user_subject(value: str) -> str:
    value = value.strip()
    user = db.session.get(User, row_id(value)) if row_id(value) else db.session.scalar(select(User).where(User.email == value.lower()))
    if user is None:
        raise ServiceError(f"No user {value}: give an email or a user id.", "subject")
    return str(user.id)


def _key_subject(value: str) -> str:
    value = value.strip()
    key = db.session.get(ApiKey, row_id(value)) if row_id(value) else db.session.scalar(select(ApiKey).where(ApiKey.prefix == value.rstrip("…")))
    if key is None:
        raise ServiceError(f"No API key {value}: give a key id or its prefix (sk-sb-…).", "subject")
    return str(key.id)


def _org_subject(value: str) -> str:
    value = value.strip()
    query = select(Account).where(Account.kind == AccountKind.ORGANISATION.value)
    account = db.session.scalar(query.where(Account.id == row_id(value)) if row_id(value) else query.where(Account.name == value))
    if account is None:
        raise ServiceError(f"No organisation {value}: give its account id or its exact name.", "subject")
    return str(account.id)


def _ip_subject(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ServiceError(f"'{value}' is not an IP address or CIDR range (like 203.0.113.7 or 203.0.113.0/24).", "subject") from None


SUBJECTS = {"user": _user_subject, "org": _org_subject, "key": _key_subject, "ip": _ip_subject}


def ban(actor: Actor, kind: str, subject: str, reason: str, expires_at: datetime | None = None) -> Ban:
    if kind not in KINDS:
        raise ServiceError("Ban a user, an organisation, a key or an IP address/range.", "kind")
    if not (subject or "").strip():
        raise ServiceError("Say whom to ban.", "subject")
    normalised = SUBJECTS[kind](subject)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Give a reason (operators and the audit log see it).", "reason")
    if expires_at is not None and expires_at <= utcnow():
        raise ServiceError("The expiry must be in the future (or leave it empty for no expiry).", "expires_at")
    row = Ban(kind=kind, subject=normalised, reason=reason, expires_at=expires_at, created_by=actor.id)
    db.session.add(row)
    db.session.flush()
    audit(actor, "ban.create", "ban", row.id, after=describe(row))
    commit()
    return row


def ban_by_id(ban_id: int) -> Ban:
    row = db.session.get(Ban, ban_id)
    if row is None:
        raise NotFound(f"ban {ban_id}")
    return row


def lift(actor: Actor, row: Ban) -> Ban:
    if not row.active_at(utcnow()):
        raise ServiceError("This ban is no longer active.", status=409)
    before = describe(row)
    row.lifted_at, row.lifted_by = utcnow(), actor.id
    audit(actor, "ban.lift", "ban", row.id, before=before, after=describe(row))
    commit()
    return row


def active_query(now: datetime | None = None):
    now = now or utcnow()
    return select(Ban).where(Ban.lifted_at.is_(None), or_(Ban.expires_at.is_(None), Ban.expires_at > now))


def ended_query(now: datetime | None = None):
    now = now or utcnow()
    return select(Ban).where(or_(Ban.lifted_at.is_not(None), Ban.expires_at <= now))


def active_for(kind: str, subject: str) -> list[Ban]:
    return list(db.session.scalars(active_query().where(Ban.kind == kind, Ban.subject == subject).order_by(Ban.id)))


def unban_user(actor: Actor, user: User) -> int:
    """Lift every active ban of a user; returns how many were lifted."""
    return _lift_all(actor, "user", str(user.id), user.email)


def unban_organisation(actor: Actor, account: Account) -> int:
    """Lift every active ban of an organisation; returns how many were lifted."""
    return _lift_all(actor, "org", str(account.id), account.name)


def _lift_all(actor: Actor, kind: str, subject: str, name: str) -> int:
    rows = active_for(kind, subject)
    if not rows:
        raise ServiceError(f"{name} is not banned.", status=409)
    now = utcnow()
    for row in rows:
        before = describe(row)
        row.lifted_at, row.lifted_by = now, actor.id
        audit(actor, "ban.lift", "ban", row.id, before=before, after=describe(row))
    commit()
    return len(rows)
