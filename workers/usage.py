"""Usage ingestion: the Redis usage streams (one per money bucket) → request logs and charge entries
in SQL.

One transaction per batch writes the request logs and the ledger entries, idempotent on the request
id (a replayed event is skipped, and the database's unique constraints back that up). A batch the
database refuses is written one event at a time: an event it refuses while it answers for the others
(any error: too long, out of range, a missing account) goes to the dead-letter stream with the error
(controlplane/dead_letters.py), the rest are written. Entries are acknowledged only once they are in
SQL or dead-lettered; while the database is down nothing is, and the entries are claimed again later.
Every entry remembers the stream it came from: a batch may hold entries of several streams, and each
is acknowledged on its stream.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import NamedTuple

from redis.exceptions import ResponseError
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from controlplane import dead_letters, ledger
from controlplane.extensions import db
from controlplane.models import RequestLog
from controlplane.runtime import runtime
from relay import redis_keys
from relay.usage import USAGE_GROUP, USAGE_STREAMS, UsageEvent
from workers import usage_fields
from workers.context import in_app_context
from workers.usage_writes import write_batch, write_fresh  # noqa: F401 - write_batch: the demo seed's and the tests' entry

log = logging.getLogger(__name__)
STALE_MS = 60_000  # an entry a dead consumer read this long ago is taken over
TRANSIENT_TRIES = 3
# PostgreSQL: serialization failure, deadlock, lock not available, connection failures.
TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "08000", "08003", "08006", "57P01"}


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def ensure_group(redis, streams: tuple[str, ...] = USAGE_STREAMS) -> None:
    """The consumer group on every stream (and the stream, so that the group can be made before the
    first event)."""
    for stream in streams:
        try:
            redis.xgroup_create(stream, USAGE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def apply_unheld(fresh: list[UsageEvent]) -> None:
    """After the commit: charges replayed from a relay's settle journal without their hold never
    touched the live balance (relay/journal.py); the first write of such an event applies them, so a
    replay that finds the request written already changes nothing."""
    quota = runtime().quota
    for e in fresh:
        if not e.unheld or not e.cost or e.account_id is None:
            continue
        try:
            quota.credit(e.account_id, -e.cost, ledger.stored_balance(e.account_id))
            if e.api_key_id is not None:
                quota.add_key_spent(e.account_id, e.api_key_id, e.cost)
        except Exception:  # noqa: BLE001 - reconcile --fix repairs a live balance from the ledger
            log.exception("live balance of account %s not debited for journaled %s", e.account_id, e.request_id)


class Pending(NamedTuple):
    """One usage-stream entry to ingest; `tries` counts earlier dead-letterings (an operator's retry)."""

    id: bytes
    fields: dict | None  # the event (`e`) and what settle added; None: the entry was deleted while pending
    tries: int = 0
    stream: str = USAGE_STREAMS[0]  # where it is acknowledged (ids are unique within a stream only)


@dataclass
class Outcome:
    """What one batch came to. Only `done` and `dead` entries may be acknowledged."""

    written: int = 0
    done: list[Pending] = field(default_factory=list)  # in SQL now, or already before
    dead: list[tuple[Pending, str]] = field(default_factory=list)  # to the dead-letter stream, with the error
    stuck: bool = False  # the database stopped answering: the rest stay pending and are claimed again


class DatabaseUnavailable(Exception):
    """The database, not the event, is at fault: nothing is dead-lettered, nothing acknowledged."""


def describe(error: Exception) -> str:
    """The database's own words (without the statement and its parameters, which can be long)."""
    cause = getattr(error, "orig", None) or error
    return f"{type(cause).__name__}: {str(cause).strip()}"[:dead_letters.ERROR_LIMIT]


def _transient(error: Exception) -> bool:
    """Lost connections, deadlocks, serialization failures and lock waits pass if tried again."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    cause = getattr(error, "orig", None)
    if getattr(cause, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    return isinstance(error, OperationalError) and ("locked" in str(cause) or "busy" in str(cause))


def _answers() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        return True
    except Exception:  # noqa: BLE001 - any failure means it does not
        db.session.rollback()
        return False


def _already_written(request_id: str) -> bool:
    try:
        found = db.session.scalar(select(RequestLog.id).where(RequestLog.request_id == request_id)) is not None
        db.session.rollback()
        return found
    except Exception as error:
        db.session.rollback()
        raise DatabaseUnavailable(describe(error)) from error


def _write_alone(event: UsageEvent) -> tuple[int, str | None]:
    """Write one event in its own transaction: (written, None), or (0, the error) when it is poison."""
    for _ in range(TRANSIENT_TRIES):
        try:
            fresh = write_fresh([event])
            db.session.commit()
            apply_unheld(fresh)
            return len(fresh), None
        except Exception as error:
            db.session.rollback()
            if _already_written(event.request_id):
                return 0, None  # another consumer wrote it meanwhile
            if _transient(error):
                continue
            if not _answers():
                raise DatabaseUnavailable(describe(error)) from error
            return 0, describe(error)
    raise DatabaseUnavailable(f"{event.request_id}: still failing after {TRANSIENT_TRIES} tries")


def store(entries: list[Pending]) -> Outcome:
    """Write a batch in one transaction; when that fails, each event alone, dead-lettering the ones
    the database refuses while it answers for others."""
    out = Outcome()
    groups: dict[str, tuple[UsageEvent, list[Pending]]] = {}
    for entry in entries:
        if not entry.fields or b"e" not in entry.fields:
            out.done.append(entry)
            continue
        try:
            event = usage_fields.parse(entry.fields)
        except usage_fields.InvalidEvent as error:
            out.dead.append((entry, f"InvalidEvent: {error}"))
            continue
        groups.setdefault(event.request_id, (event, []))[1].append(entry)
    try:
        fresh = write_fresh([event for event, _ in groups.values()])
        db.session.commit()
        apply_unheld(fresh)
        out.written = len(fresh)
        out.done.extend(e for _, same in groups.values() for e in same)
        return out
    except Exception:  # noqa: BLE001 - one bad event, a race, or the database: sorted out one by one
        db.session.rollback()
    for event, same in groups.values():
        try:
            written, error = _write_alone(event)
        except DatabaseUnavailable as error:
            log.error("usage ingestion paused, the database is unavailable: %s", error)
            out.stuck = True
            return out
        out.written += written
        if error is None:
            out.done.extend(same)
        else:
            # One dead letter per request; its replays are the same charge and go with it.
            log.error("usage event %s dead-lettered: %s", event.request_id, error)
            out.dead.append((same[0], error))
            out.done.extend(same[1:])
    return out


def _by_stream(out: Outcome) -> dict[str, list[bytes]]:
    ids: dict[str, list[bytes]] = {}
    for entry in [*out.done, *(entry for entry, _ in out.dead)]:
        ids.setdefault(entry.stream, []).append(entry.id)
    return ids


def _dead_letter(pipe, dead: list[tuple[Pending, str]]) -> None:
    for entry, error in dead:
        pipe.xadd(dead_letters.DEAD_STREAM, dead_letters.entry_fields(entry.fields, error, entry.tries + 1, entry.id.decode()))


def _remove(pipe, stream: str, ids: list[bytes]) -> None:
    pipe.xack(stream, USAGE_GROUP, *ids)
    pipe.xdel(stream, *ids)


def acknowledge(redis, out: Outcome) -> None:
    """Dead-letter and acknowledge: an event leaves its usage stream only once it is in SQL or in the
    dead-letter stream. On one server that is one Redis transaction over every stream of the batch."""
    streams = _by_stream(out)
    if not streams:
        return
    if redis_keys.SPREAD:
        _acknowledge_by_slot(redis, out.dead, streams)
        return
    pipe = redis.pipeline(transaction=True)
    _dead_letter(pipe, out.dead)
    for stream, ids in streams.items():
        _remove(pipe, stream, ids)
    pipe.execute()


def _acknowledge_by_slot(redis, dead: list[tuple[Pending, str]], streams: dict[str, list[bytes]]) -> None:
    """With the money spread over buckets (Redis Cluster) the dead-letter stream and each bucket's
    stream are in slots of their own, which no transaction spans: the dead letters are added first,
    then each stream acknowledges in a transaction of its own. A crash in between leaves a
    dead-lettered entry pending, to be read and dead-lettered again; a retry of both letters still
    charges once, as ingestion skips a request already in SQL, and reconcile and restore count a
    request once."""
    if dead:
        pipe = redis.pipeline(transaction=True)
        _dead_letter(pipe, dead)
        pipe.execute()
    for stream, ids in streams.items():
        pipe = redis.pipeline(transaction=True)
        _remove(pipe, stream, ids)
        pipe.execute()


def _tries(fields: dict) -> int:
    try:
        return int(fields.get(b"n") or 0)
    except ValueError:
        return 0


def pending(rows, stream: str = USAGE_STREAMS[0]) -> list[Pending]:
    """The entries of `stream` as XREADGROUP, XCLAIM or XAUTOCLAIM returned them."""
    # Only an operator's retry carries a try count (`n`): the rest skip reading one.
    return [Pending(entry_id, fields, _tries(fields) if b"n" in fields else 0, stream) if fields else Pending(entry_id, None, 0, stream)
            for entry_id, fields in rows]


@in_app_context
def ingest(batch_size: int | None = None, max_seconds: float = 10.0) -> int:
    """Drain the usage streams into SQL for up to `max_seconds` (what `switchboard ingest --drain`
    does; the resident consumer is workers/consumer.py). Returns events written."""
    from workers.consumer import Consumer

    rt = runtime()
    return Consumer(rt.redis, batch_size or rt.settings.usage_batch_size).drain(max_seconds).written


def backlog() -> int:
    """Events waiting in the streams (read or not)."""
    redis = runtime().redis
    return sum(int(redis.xlen(stream)) for stream in USAGE_STREAMS)
