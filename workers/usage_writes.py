"""A batch of usage events into SQL in a handful of statements, however many events it holds.

Request logs and charge entries go in by the driver's bulk route (controlplane/bulk.py: COPY on
PostgreSQL, sqlite3's executemany on SQLite); account balances, key spend and rollups as one UPDATE
per changed row, run as one executemany. No ORM objects: building and flushing one per event cost
more than everything else ingestion does. The caller commits.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache

from sqlalchemy import bindparam, select, update

from controlplane import ledger, rollups
from controlplane.bulk import BulkInsert, json_text, one_of, utc_text
from controlplane.extensions import db
from controlplane.models import Account, ApiKey, RequestLog
from relay.quota import account_key
from relay.usage import UsageEvent

_LOGS = RequestLog.__table__
log = logging.getLogger(__name__)
_KEYS = ApiKey.__table__
_ACCOUNTS = Account.__table__
_LOG_COLUMNS = ("request_id", "started_at", "finished_at", "api_key_id", "account_id", "user_id", "channel_id", "channel_key_id",
                "model", "upstream_model", "endpoint", "stream", "status", "error_code", "input_tokens", "cache_read_tokens",
                "cache_write_tokens", "output_tokens", "reasoning_tokens", "usage_source", "cost", "latency_ms", "ttft_ms",
                "queue_ms", "client_ip", "trace")
_INSERT_LOGS = BulkInsert(_LOGS, _LOG_COLUMNS)
_KEY_SPEND = (update(_KEYS).where(_KEYS.c.id == bindparam("key"))
              .values(spent=_KEYS.c.spent + bindparam("amount", type_=_KEYS.c.spent.type),
                      last_used_at=bindparam("used", type_=_KEYS.c.last_used_at.type)))
_IDS_PER_SELECT = 1_000


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def log_row(e: UsageEvent) -> tuple:
    """The request-log row of an event, in `_LOG_COLUMNS` order."""
    return (e.request_id, utc_text(e.started_at), utc_text(e.finished_at), e.api_key_id, e.account_id, e.user_id, e.channel_id,
            e.channel_key_id, e.model, e.upstream_model, e.endpoint, e.stream, e.status, e.error_code, e.input_tokens,
            e.cache_read_tokens, e.cache_write_tokens, e.output_tokens, e.reasoning_tokens, e.usage_source, e.cost, e.latency_ms,
            e.ttft_ms, e.queue_ms, e.client_ip, json_text(e.trace))


@cache
def _seen_query(dialect: str):
    return select(_LOGS.c.request_id).where(one_of(_LOGS.c.request_id, "ids", dialect))


def _written_before(request_ids: list[str]) -> set[str]:
    seen: set[str] = set()
    query = _seen_query(db.session.get_bind().dialect.name)
    for i in range(0, len(request_ids), _IDS_PER_SELECT):
        seen.update(db.session.scalars(query, {"ids": request_ids[i:i + _IDS_PER_SELECT]}))
    return seen


def write_fresh(events: list[UsageEvent]) -> list[UsageEvent]:
    """Write the events not written before (idempotent on the request id: a replay is skipped, and
    the unique constraints on request logs and charges back that up) and return them."""
    unique: dict[str, UsageEvent] = {}
    for e in events:
        unique.setdefault(e.request_id, e)
    seen = _written_before(list(unique))
    fresh = [e for rid, e in unique.items() if rid not in seen]
    if not fresh:
        return fresh
    _floor_unheld(fresh)
    _INSERT_LOGS.run([log_row(e) for e in fresh])
    ledger.post_charges([(e.account_id, e.cost, e.request_id, e.api_key_id) for e in fresh if e.cost and e.account_id is not None])
    spent: dict[int, int] = {}
    last_used: dict[int, float] = {}
    for e in fresh:
        if e.api_key_id is not None:
            spent[e.api_key_id] = spent.get(e.api_key_id, 0) + e.cost
            last_used[e.api_key_id] = max(last_used.get(e.api_key_id, 0.0), e.finished_at)
    if spent:
        db.session.execute(_KEY_SPEND, [{"key": key, "amount": amount, "used": _utc(last_used[key])} for key, amount in spent.items()])
    rollups.upsert(fresh)
    return fresh


def _floor_unheld(fresh: list[UsageEvent]) -> None:
    """A charge replayed from a relay's journal after Redis lost its hold (relay/journal.py) was
    never checked against the balance: it is charged as far as the account has room — its SQL balance
    after this batch's other charges, and its live balance after the holds of requests running now —
    never below zero, as the settle script does with a hold it finds. What is cut is kept on the event (`uncharged`, a `charge_cut` step in its trace).
    One locked read per account with such an event: a batch's few, never a list of ids."""
    unheld = [e for e in fresh if e.unheld and e.cost > 0 and e.account_id is not None]
    if not unheld:
        return
    from controlplane.runtime import runtime

    room: dict[int, int] = {}
    for account_id in sorted({e.account_id for e in unheld if e.account_id is not None}):
        balance = db.session.scalar(select(_ACCOUNTS.c.balance).where(_ACCOUNTS.c.id == account_id).with_for_update()) or 0
        held_elsewhere = sum(e.cost for e in fresh if e.account_id == account_id and not e.unheld)
        room[account_id] = max(0, balance - held_elsewhere)
        try:  # and what live holds of requests running now have reserved: theirs stays covered
            live, held = runtime().redis.hmget(account_key(account_id), "bal", "held")
            if live is not None:  # None: not rebuilt from SQL yet after the loss, SQL's figure alone
                room[account_id] = min(room[account_id], max(0, int(live) - int(held or 0)))
        except Exception:  # noqa: BLE001 - Redis away: SQL's figure alone (the live debit waits for reconcile anyway)
            log.warning("live balance of account %s not read for an unheld charge", account_id)
    for e in unheld:
        account_id = e.account_id or 0  # never 0: `unheld` holds only events that name an account
        allowed = min(e.cost, room[account_id])
        room[account_id] -= allowed
        if allowed != e.cost:
            e.uncharged += e.cost - allowed
            e.trace = [*e.trace, {"step": "charge_cut", "cost": e.cost, "charged": allowed}]
            e.cost = allowed


def write_batch(events: list[UsageEvent]) -> int:
    """Write the events not written before; returns how many were new. The caller commits."""
    return len(write_fresh(events))


__all__ = ["log_row", "write_batch", "write_fresh"]
