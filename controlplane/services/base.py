"""What every write path shares: who acts, how it fails, and the commit → audit → publish step."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from controlplane.errors import NotFound, ServiceError  # noqa: F401  (re-exported)
from controlplane.extensions import db
from controlplane.models import AuditEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Whoever causes a write: an operator (id, email) or a named system actor."""

    name: str
    id: int | None = None
    ip: str | None = None

    @classmethod
    def cli(cls) -> "Actor":
        return cls(name="cli")

    @classmethod
    def system(cls, what: str = "system") -> "Actor":
        return cls(name=what)


def audit(actor: Actor, action: str, target_type: str, target_id, before: dict | None = None, after: dict | None = None) -> None:
    db.session.add(
        AuditEntry(
            actor_id=actor.id,
            actor=actor.name,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            before=before,
            after=after,
            ip=actor.ip,
        )
    )


def commit(publish: bool = True) -> None:
    """Commit the unit of work (audit entries included) and tell the relays what it changed: the
    records of the keys it touched (always), and a new routing snapshot when it changed routing
    (unless `publish` is False: nothing a relay routes by changed)."""
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    tell_relays(publish)


def tell_relays(publish: bool = True) -> None:
    from controlplane import changes, key_records
    from controlplane.runtime import runtime

    marked = changes.take(db.session)
    if not marked:
        return
    redis = runtime().redis
    try:
        if marked.key_ids or marked.user_ids or marked.members or marked.account_ids:
            key_records.sync(redis, marked.key_ids, marked.user_ids, marked.members, marked.account_ids)
    except Exception:
        # SQL is committed; the record sweep (workers/maintenance.py) rewrites what differs.
        log.exception("key records not written")
    if publish and marked.routing:
        from controlplane.snapshot import publish as publish_snapshot

        try:
            publish_snapshot()
        except Exception:
            # SQL is committed; the relays catch up at the next publish (the scheduler republishes).
            log.exception("snapshot publish failed")
