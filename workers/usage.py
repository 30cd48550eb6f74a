"""Usage ingestion: the Redis usage stream → request logs and charge entries in SQL.

One transaction per batch writes the request logs and the ledger entries, idempotent on the request
id (a replayed event is skipped, and the database's unique constraints back that up). Entries are
acknowledged and deleted from the stream only after the commit.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import defaultdict
from datetime import datetime, timezone

from redis.exceptions import ResponseError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controlplane import ledger, rollups
from controlplane.extensions import db
from controlplane.models import ApiKey, RequestLog
from controlplane.runtime import runtime
from relay.usage import USAGE_GROUP, USAGE_STREAM, UsageEvent
from workers.context import in_app_context

log = logging.getLogger(__name__)
STALE_MS = 60_000  # an entry a dead consumer read this long ago is taken over


def _consumer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def ensure_group(redis) -> None:
    try:
        redis.xgroup_create(USAGE_STREAM, USAGE_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _log_row(e: UsageEvent) -> RequestLog:
    return RequestLog(
        request_id=e.request_id,
        started_at=_utc(e.started_at),
        finished_at=_utc(e.finished_at),
        api_key_id=e.api_key_id,
        account_id=e.account_id,
        user_id=e.user_id,
        channel_id=e.channel_id,
        channel_key_id=e.channel_key_id,
        model=e.model,
        upstream_model=e.upstream_model,
        endpoint=e.endpoint,
        stream=e.stream,
        status=e.status,
        error_code=e.error_code,
        input_tokens=e.input_tokens,
        cache_read_tokens=e.cache_read_tokens,
        cache_write_tokens=e.cache_write_tokens,
        output_tokens=e.output_tokens,
        reasoning_tokens=e.reasoning_tokens,
        usage_source=e.usage_source,
        cost=e.cost,
        latency_ms=e.latency_ms,
        ttft_ms=e.ttft_ms,
        client_ip=e.client_ip,
        trace=e.trace,
    )


def write_batch(events: list[UsageEvent]) -> int:
    """Write the events not written before; returns how many were new. The caller commits."""
    unique: dict[str, UsageEvent] = {}
    for e in events:
        unique.setdefault(e.request_id, e)
    seen = set(db.session.scalars(select(RequestLog.request_id).where(RequestLog.request_id.in_(list(unique)))))
    fresh = [e for rid, e in unique.items() if rid not in seen]
    spent_by_key: dict[int, int] = defaultdict(int)
    last_used: dict[int, float] = {}
    db.session.add_all([_log_row(e) for e in fresh])
    ledger.post_charges([(e.account_id, e.cost, e.request_id, e.api_key_id) for e in fresh if e.cost and e.account_id is not None])
    for e in fresh:
        if e.api_key_id is not None:
            spent_by_key[e.api_key_id] += e.cost
            last_used[e.api_key_id] = max(last_used.get(e.api_key_id, 0.0), e.finished_at)
    rollups.upsert(fresh)
    for key_id, amount in spent_by_key.items():
        db.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(spent=ApiKey.spent + amount, last_used_at=_utc(last_used[key_id]))
        )
    return len(fresh)


def _commit_batch(events: list[UsageEvent]) -> int:
    try:
        written = write_batch(events)
        db.session.commit()
        return written
    except IntegrityError:
        # Another consumer wrote some of these meanwhile: fall back to one event at a time.
        db.session.rollback()
        written = 0
        for event in events:
            try:
                written += write_batch([event])
                db.session.commit()
            except IntegrityError:
                db.session.rollback()
        return written


@in_app_context
def ingest(batch_size: int | None = None, max_seconds: float = 10.0) -> int:
    """Drain the usage stream into SQL for up to `max_seconds`. Returns events written."""
    rt = runtime()
    redis = rt.redis
    batch_size = batch_size or rt.settings.usage_batch_size
    ensure_group(redis)
    consumer = _consumer()
    deadline = time.monotonic() + max_seconds
    written = 0
    # First take over what crashed consumers left unacknowledged.
    claimed = redis.xautoclaim(USAGE_STREAM, USAGE_GROUP, consumer, min_idle_time=STALE_MS, start_id="0-0", count=batch_size)
    pending = claimed[1] if claimed else []
    while True:
        if not pending:
            reply = redis.xreadgroup(USAGE_GROUP, consumer, {USAGE_STREAM: ">"}, count=batch_size)
            pending = reply[0][1] if reply else []
        if not pending:
            break
        ids = [entry_id for entry_id, fields in pending if fields]
        events = []
        for entry_id, fields in pending:
            raw = fields.get(b"e") if fields else None
            if raw is None:
                continue
            try:
                events.append(UsageEvent.from_stream(fields))
            except Exception:
                log.exception("unreadable usage event %s dropped", entry_id)
        written += _commit_batch(events)
        if ids:
            pipe = redis.pipeline()
            pipe.xack(USAGE_STREAM, USAGE_GROUP, *ids)
            pipe.xdel(USAGE_STREAM, *ids)
            pipe.execute()
        pending = []
        if time.monotonic() >= deadline:
            break
    return written


def backlog() -> int:
    """Events waiting in the stream (read or not)."""
    return int(runtime().redis.xlen(USAGE_STREAM))
