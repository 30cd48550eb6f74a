"""Periodic upkeep: release abandoned holds, republish the snapshot as a backstop, prune old request
logs (on PostgreSQL by dropping whole month partitions, and creating the months ahead), reconcile
the books, rebuild key records and balances after a Redis loss, and sweep key records for drift
from SQL."""
from __future__ import annotations

import logging
import time
from datetime import UTC, timedelta

from sqlalchemy import column, delete, select, table

from controlplane import log_partitions
from controlplane.extensions import db
from controlplane.models import RequestLog, utcnow
from controlplane.runtime import runtime
from relay import redis_keys
from workers.context import in_app_context

log = logging.getLogger(__name__)
PRUNE_BATCH = 5_000  # rows per transaction: short locks, bounded parameter lists


@in_app_context
def sweep_holds() -> int:
    """Release holds whose request never settled (a relay crashed mid-request)."""
    return runtime().quota.release_expired(time.time())


@in_app_context
def republish_snapshot() -> int:
    """Rebuild and publish the snapshot (ban expiries, scheduled prices, a lost publish)."""
    from controlplane.snapshot import publish

    return publish()


@in_app_context
def prune_request_logs(days: int | None = None, batch: int = PRUNE_BATCH, max_batches: int | None = None) -> int:
    """Remove request logs that started more than `days` ago (default: the retention setting).
    Hourly rollups, ledger entries and refunds keep what the consoles and the books need. Returns
    how many rows went.

    SQLite (and an unpartitioned table): deleted oldest first, `batch` rows a transaction, so a
    backlog never holds a long lock. PostgreSQL's month partitions: a month whose every row is past
    retention is dropped whole (rows live up to a month longer than `days`, never shorter); only the
    default partition's strays are deleted row by row."""
    days = runtime().settings.log_retention_days if days is None else days
    if days <= 0:
        return 0
    cutoff = utcnow() - timedelta(days=days)
    if log_partitions.is_partitioned(db.session):
        removed = 0
        for partition in log_partitions.expired(db.session, cutoff):
            removed += log_partitions.drop(db.session, partition)
            db.session.commit()
            log.info("request logs: dropped partition %s (%s to %s)", partition.name, partition.start, partition.end)
        # A bare table has no UTCDateTime column type: give it the cutoff as stored, naive UTC.
        stray = table(log_partitions.DEFAULT, column("id"), column("started_at"))
        return removed + _delete_in_batches(stray, cutoff.astimezone(UTC).replace(tzinfo=None), batch, max_batches)
    return _delete_in_batches(RequestLog.__table__, cutoff, batch, max_batches)


def _delete_in_batches(logs, cutoff, batch: int, max_batches: int | None) -> int:
    deleted = batches = 0
    while max_batches is None or batches < max_batches:
        ids = list(db.session.scalars(select(logs.c.id).where(logs.c.started_at < cutoff).order_by(logs.c.id).limit(batch)))
        if not ids:
            break
        db.session.execute(delete(logs).where(logs.c.id >= ids[0], logs.c.id <= ids[-1], logs.c.started_at < cutoff))
        db.session.commit()
        deleted += len(ids)
        batches += 1
    return deleted


@in_app_context
def ensure_log_partitions() -> list[str]:
    """PostgreSQL: this month's and the next months' request-log partitions (nothing elsewhere)."""
    created = log_partitions.ensure(db.session)
    db.session.commit()
    if created:
        log.info("request logs: created partitions %s", ", ".join(created))
    return created


def scheduled_prune() -> int:
    """The scheduler's run: the months ahead first, then at most 100 batches (half a million rows)
    an hour, inside the job timeout."""
    ensure_log_partitions()
    return prune_request_logs(max_batches=100)


@in_app_context
def scheduled_reconcile() -> bool:
    """Reconcile on the scheduler (read-only): findings are logged for the operator; repairs stay an
    explicit `scripts.reconcile --fix`."""
    from workers.reconcile import reconcile

    report = reconcile()
    if not report.consistent:
        log.warning("reconcile: %d finding(s): %s", len(report.findings), report.as_dict())
    return report.consistent


# Each run stays well inside its job timeout; the next run continues from the cursor.
REBUILD_SLICE_SECONDS = 120


@in_app_context
def ensure_key_records() -> bool:
    """Rebuild key records and live balances from SQL when Redis lost them (one slice per run, one
    run at a time). True when Redis has them."""
    from controlplane import key_rebuild
    from workers.locks import Lock

    rt = runtime()
    if key_rebuild.is_ready(rt.redis):
        return True
    with Lock(rt.redis, redis_keys.LOCK_KEY_REBUILD, REBUILD_SLICE_SECONDS * 2) as lock:
        if not lock.acquire():
            return False
        progress = key_rebuild.rebuild(rt.redis, seconds=REBUILD_SLICE_SECONDS)
    return progress.done


@in_app_context
def sweep_key_records() -> int:
    """Rewrite key records that drifted from SQL (a write whose Redis half failed)."""
    from controlplane import key_rebuild

    return key_rebuild.sweep(runtime().redis)
