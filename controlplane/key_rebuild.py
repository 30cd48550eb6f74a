"""Redis rebuilt from SQL, in bounded batches, resumably: after a Redis loss (and at `switchboard up`
when Redis has never had them) every account's live balance and every key's record, spend and
spend windows; and a slow sweep that rewrites any record that drifted from SQL (a write whose
Redis half failed after its SQL commit).

Progress is a cursor in Redis (the last id done), so a job cut short by its timeout continues where
it stopped; `READY_KEY` is set when a rebuild finished. Nothing here binds more than one batch of ids.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import select

from controlplane import key_records
from controlplane.extensions import db
from controlplane.models import Account
from relay import keys as rk
from relay import redis_keys
from relay.quota import account_key

log = logging.getLogger(__name__)

REBUILD_CURSOR = redis_keys.KEYS_REBUILD_CURSOR  # hash: phase (accounts | keys), after (the last id done)
SWEEP_CURSOR = redis_keys.KEYS_SWEEP_CURSOR  # the last key id the drift sweep compared
PHASES = ("accounts", "keys")


@dataclass(frozen=True)
class Progress:
    done: bool
    phase: str
    after: int
    written: int


def is_ready(redis) -> bool:
    return bool(redis.exists(rk.READY_KEY))


def _cursor(redis, name: str) -> tuple[str, int]:
    raw = redis.hgetall(name)
    phase = (raw.get(b"phase") or b"accounts").decode()
    return (phase if phase in PHASES else "accounts"), int(raw.get(b"after") or 0)


def _account_batch(redis, after: int, batch: int) -> tuple[int | None, int]:
    rows = db.session.execute(select(Account.id, Account.balance).where(Account.id > after).order_by(Account.id).limit(batch)).all()
    if not rows:
        return None, 0
    pipe = redis.pipeline(transaction=False)
    for account_id, balance in rows:
        pipe.hsetnx(account_key(account_id), "bal", balance)
    pipe.execute()
    return rows[-1][0], len(rows)


def _key_batch(redis, after: int, batch: int, only_missing: bool = True) -> tuple[int | None, int]:
    from controlplane.models import ApiKey

    rows = db.session.execute(key_records.key_rows().where(ApiKey.id > after).order_by(ApiKey.id).limit(batch)).all()
    if not rows:
        return None, 0
    key_records.write(redis, key_records.build(rows), only_missing=only_missing, announce=False)
    return rows[-1].id, len(rows)


def rebuild(redis, batch: int = key_records.CHUNK, seconds: float | None = None) -> Progress:
    """Continue (or start) the rebuild; stop after `seconds` (None: run to the end). Records already
    in Redis are kept: the write path put them there, and they are at least as new as SQL was."""
    phase, after = _cursor(redis, REBUILD_CURSOR)
    deadline = None if seconds is None else time.monotonic() + seconds
    written = 0
    while True:
        last, count = (_account_batch if phase == "accounts" else _key_batch)(redis, after, batch)
        db.session.rollback()  # end the read transaction: a long rebuild must not pin one snapshot of SQL
        if last is None:
            if phase == "accounts":
                phase, after = "keys", 0
                redis.hset(REBUILD_CURSOR, mapping={"phase": phase, "after": after})
                continue
            break
        after, written = last, written + count
        redis.hset(REBUILD_CURSOR, mapping={"phase": phase, "after": after})
        if deadline is not None and time.monotonic() > deadline:
            return Progress(False, phase, after, written)
    redis.set(rk.READY_KEY, int(time.time()))
    redis.delete(REBUILD_CURSOR)
    key_records.append_changes(redis, [rk.EVERYTHING])
    log.info("key records rebuilt from SQL")
    return Progress(True, phase, after, written)


def ensure(redis, seconds: float | None = None) -> Progress | None:
    """Rebuild when Redis does not have the records (lost, or never built); None when it has."""
    if is_ready(redis):
        return None
    log.warning("Redis has no key records: rebuilding them from SQL")
    return rebuild(redis, seconds=seconds)


def sweep(redis, batches: int = 10, batch: int = key_records.CHUNK) -> int:
    """Compare the next `batches` batches of records with SQL and rewrite (and announce) those that
    differ; wraps around at the end. Returns how many were rewritten."""
    from controlplane.models import ApiKey

    after = int(redis.get(SWEEP_CURSOR) or 0)
    fixed = 0
    for _ in range(batches):
        rows = db.session.execute(key_records.key_rows().where(ApiKey.id > after).order_by(ApiKey.id).limit(batch)).all()
        if not rows:
            after = 0
            break
        records = key_records.build(rows)
        names = [rk.record_key(r.hash) for r in records]
        # Over a cluster the records spread over its slots: redis-py reads them node by node.
        stored = redis.mget_nonatomic(names) if redis_keys.CLUSTER else redis.mget(names)
        drifted = [r for r, raw in zip(records, stored, strict=True)
                   if (r.view is None and raw is not None) or (r.view is not None and raw != rk.encode(r.view))]
        key_records.write(redis, drifted)
        fixed += len(drifted)
        after = rows[-1].id
        db.session.rollback()
    redis.set(SWEEP_CURSOR, after)
    if fixed:
        log.warning("key record sweep rewrote %d records that differed from SQL", fixed)
    return fixed
