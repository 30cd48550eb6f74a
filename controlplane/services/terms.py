"""Versions of the terms of service and who accepted which.

The first version may take effect at once; every later one is announced at least 14 days before it
takes effect (customers are emailed and see it on their dashboard). A person accepts the version in
force when they sign up; acceptances are kept per version.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from controlplane.extensions import db
from controlplane.models import TermsAcceptance, TermsVersion, User, utcnow
from controlplane.models.lifecycle import TERMS_SUMMARY_MAX, TERMS_URL_MAX, TERMS_VERSION_MAX
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit

NOTICE = timedelta(days=14)


def describe(row: TermsVersion) -> dict:
    return {"id": row.id, "version": row.version, "summary": row.summary, "url": row.url, "effective_at": row.effective_at.isoformat(),
            "created_at": row.created_at.isoformat() if row.created_at else None, "notified_at": row.notified_at.isoformat() if row.notified_at else None}


def in_force(now: datetime | None = None) -> TermsVersion | None:
    now = now or utcnow()
    return db.session.scalar(select(TermsVersion).where(TermsVersion.effective_at <= now).order_by(TermsVersion.effective_at.desc()).limit(1))


def versions() -> list[TermsVersion]:
    return list(db.session.scalars(select(TermsVersion).order_by(TermsVersion.effective_at.desc())))


def acceptance_counts() -> dict[int, int]:
    return dict(db.session.execute(select(TermsAcceptance.terms_version_id, func.count()).group_by(TermsAcceptance.terms_version_id)).all())


def publish(actor: Actor, version: str, summary: str, url: str | None, effective_at: datetime | None) -> TermsVersion:
    version, summary, url = (version or "").strip(), (summary or "").strip(), (url or "").strip() or None
    if not 1 <= len(version) <= TERMS_VERSION_MAX:
        raise ServiceError(f"Name the version (at most {TERMS_VERSION_MAX} characters), e.g. 2026-12.", "version")
    if not 1 <= len(summary) <= TERMS_SUMMARY_MAX:
        raise ServiceError(f"Say what changed (at most {TERMS_SUMMARY_MAX} characters): customers read it in the notice.", "summary")
    if url is not None and (len(url) > TERMS_URL_MAX or not url.startswith(("https://", "http://"))):
        raise ServiceError(f"Give the terms' address as an http(s) URL of at most {TERMS_URL_MAX} characters.", "url")
    now = utcnow()
    first = db.session.scalar(select(TermsVersion.id).limit(1)) is None
    when = effective_at or (now if first else None)
    if when is None:
        raise ServiceError("Say when the new version takes effect (at least 14 days from now).", "effective_at")
    if not first and when < now + NOTICE:
        raise ServiceError(f"A new version takes effect at least 14 days after it is announced: {now + NOTICE:%Y-%m-%d %H:%M} UTC or later.",
                           "effective_at")
    if db.session.scalar(select(TermsVersion.id).where(TermsVersion.version == version)) is not None:
        raise ServiceError(f"There is a version {version} already.", "version", status=409)
    row = TermsVersion(version=version, summary=summary, url=url, effective_at=when, created_by=actor.id)
    db.session.add(row)
    db.session.flush()
    audit(actor, "terms.publish", "terms_version", row.id, after=describe(row))
    commit(publish=False)
    return row


def accept(user: User, row: TermsVersion, ip: str | None = None) -> bool:
    """Record that `user` accepted `row` (once); True when newly recorded. The caller commits."""
    if db.session.scalar(select(TermsAcceptance.id).where(TermsAcceptance.user_id == user.id, TermsAcceptance.terms_version_id == row.id)):
        return False
    try:
        with db.session.begin_nested():
            db.session.add(TermsAcceptance(user_id=user.id, terms_version_id=row.id, ip=(ip or None) and ip[:64]))
    except IntegrityError:
        return False
    return True


def accept_current(user: User, ip: str | None = None) -> TermsVersion | None:
    """At sign-up: the version in force, accepted. None when no terms are published."""
    row = in_force()
    if row is not None:
        accept(user, row, ip)
        db.session.commit()
    return row


def accepted_by(user: User) -> set[int]:
    return set(db.session.scalars(select(TermsAcceptance.terms_version_id).where(TermsAcceptance.user_id == user.id)))


def version_by_id(version_id: int) -> TermsVersion:
    row = db.session.get(TermsVersion, version_id)
    if row is None:
        raise NotFound(f"terms version {version_id}")
    return row
