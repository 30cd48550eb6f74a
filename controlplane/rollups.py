"""Latency histograms and rollup upserts (pure arithmetic + one SQL write path for ingestion).

Each ingested batch is folded twice: into `usage_rollups` (per account and key, for usage pages)
and into `channel_rollups` (per model and channel only, for the operator dashboard).
"""
from __future__ import annotations

import bisect
from datetime import UTC, datetime
from functools import cache

from sqlalchemy import insert, select

from controlplane.bulk import BulkUpdate, json_text, one_of
from controlplane.extensions import db
from controlplane.models.rollups import ChannelRollup, UsageRollup

# Upper bounds (ms) of the histogram buckets; the last bucket is everything above.
BOUNDS_MS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000,
             7_500, 10_000, 15_000, 20_000, 30_000, 60_000, 120_000, 300_000)
BUCKETS = len(BOUNDS_MS) + 1
TOKEN_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
SUM_FIELDS = ("requests", "errors", "failures", "cost", "upstream_cost", *TOKEN_FIELDS)
USAGE_DIMS = ("bucket", "account_id", "api_key_id", "model", "channel_id")
CHANNEL_DIMS = ("bucket", "model", "channel_id")


def bucket_index(ms: int) -> int:
    return bisect.bisect_left(BOUNDS_MS, ms)


def empty_hist() -> list[int]:
    return [0] * BUCKETS


def add_hist(a: list[int] | None, b: list[int] | None) -> list[int]:
    a = list(a or empty_hist())
    for i, n in enumerate(b or ()):
        a[i] += n
    return a


def percentile(hist: list[int] | None, q: float) -> int | None:
    """The upper bound (ms) of the bucket holding the q-th quantile; None when empty."""
    total = sum(hist or ())
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank and n:
            return BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1]
    return BOUNDS_MS[-1]


def hour_of(ts: float) -> datetime:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def dims_of(event, dims: tuple[str, ...] = USAGE_DIMS) -> tuple:
    values = {"bucket": hour_of(event.started_at), "account_id": event.account_id or 0, "api_key_id": event.api_key_id or 0,
              "model": event.model or "", "channel_id": event.channel_id or 0}
    return tuple(values[d] for d in dims)


def _blank(with_user: bool) -> dict:
    row = {f: 0 for f in SUM_FIELDS}
    row.update(latency_hist=empty_hist(), ttft_hist=empty_hist())
    if with_user:
        row["user_id"] = 0
    return row


def accumulate(events, upstream: dict[str, int] | None = None, dims: tuple[str, ...] = USAGE_DIMS) -> dict[tuple, dict]:
    """Sum a batch of usage events per rollup row; `upstream` maps request ids to upstream cost.

    One pass over the events at the finest grain (`USAGE_DIMS`); coarser rollups are sums of its rows."""
    upstream = upstream or {}
    hours: dict[int, datetime] = {}  # one datetime per hour of the batch, not one per event
    rows: dict[tuple, dict] = {}
    for e in events:
        hour = int(e.started_at // 3600)
        bucket = hours.get(hour)
        if bucket is None:
            bucket = hours[hour] = hour_of(e.started_at)
        key = (bucket, e.account_id or 0, e.api_key_id or 0, e.model or "", e.channel_id or 0)
        row = rows.get(key)
        if row is None:
            row = rows[key] = _blank(True)
        row["user_id"] = e.user_id or row["user_id"]
        row["requests"] += 1
        if e.status >= 400:
            row["errors"] += 1
            if e.status >= 500:
                row["failures"] += 1
        row["cost"] += e.cost
        if upstream:
            row["upstream_cost"] += upstream.get(e.request_id, 0)
        row["input_tokens"] += e.input_tokens
        row["cache_read_tokens"] += e.cache_read_tokens
        row["cache_write_tokens"] += e.cache_write_tokens
        row["output_tokens"] += e.output_tokens
        row["reasoning_tokens"] += e.reasoning_tokens
        if e.latency_ms is not None:
            row["latency_hist"][bisect.bisect_left(BOUNDS_MS, e.latency_ms)] += 1
        if e.ttft_ms is not None:
            row["ttft_hist"][bisect.bisect_left(BOUNDS_MS, e.ttft_ms)] += 1
    return rows if dims == USAGE_DIMS else coarsen(rows, dims)


def coarsen(rows: dict[tuple, dict], dims: tuple[str, ...]) -> dict[tuple, dict]:
    """`USAGE_DIMS` rows summed over the dimensions `dims` leaves out."""
    picks = [USAGE_DIMS.index(d) for d in dims]
    with_user = "account_id" in dims
    out: dict[tuple, dict] = {}
    for key, row in rows.items():
        coarse = tuple(key[i] for i in picks)
        into = out.get(coarse)
        if into is None:
            into = out[coarse] = _blank(with_user)
        for f in SUM_FIELDS:
            into[f] += row[f]
        into["latency_hist"] = add_hist(into["latency_hist"], row["latency_hist"])
        into["ttft_hist"] = add_hist(into["ttft_hist"], row["ttft_hist"])
        if with_user:
            into["user_id"] = row["user_id"] or into["user_id"]
    return out


HISTS = ("latency_hist", "ttft_hist")
# The rows a batch may touch are found by two dimensions (hour, and key or model), each a short list
# of values; the dimension tuples are matched here. One parameter per dimension on PostgreSQL.
_NARROW = {UsageRollup: "api_key_id", ChannelRollup: "model"}


@cache
def _statements(model, dims: tuple[str, ...], dialect: str):
    """The three statements of a fold, built once per table (their compiled forms are cached too)."""
    table = model.__table__
    narrow = _NARROW[model]
    found = (select(table.c.id, *(table.c[d] for d in dims), *(table.c[f] for f in SUM_FIELDS + HISTS))
             .where(one_of(table.c.bucket, "hours", dialect), one_of(table.c[narrow], "narrow", dialect)).with_for_update())
    # Absolute values: the rows are locked (PostgreSQL) or the database is (SQLite) until the commit.
    return found, BulkUpdate(table, SUM_FIELDS + HISTS), insert(table)


def _fold(model, dims: tuple[str, ...], totals: dict[tuple, dict]) -> None:
    """Add `totals` to the rows of `model` (rows locked on PostgreSQL), creating missing ones: one
    SELECT, one UPDATE (controlplane/bulk.py) and one INSERT per batch, each over many rows. Two consumers creating the same
    row at once: the second's batch fails on the unique constraint and ingestion writes it again event
    by event, finding the row the first committed."""
    if not totals:
        return
    found, change, add = _statements(model, dims, db.session.get_bind().dialect.name)
    narrow = dims.index(_NARROW[model])
    hours = sorted({key[0] for key in totals})
    values = sorted({key[narrow] for key in totals})
    changes = []
    for row in db.session.execute(found, {"hours": hours, "narrow": values}):
        key = tuple(row)[1:1 + len(dims)]
        more = totals.pop(key, None)
        if more is None:
            continue
        current = row._mapping
        changes.append((row[0], *(current[f] + more[f] for f in SUM_FIELDS),
                        json_text(add_hist(current["latency_hist"], more["latency_hist"])),
                        json_text(add_hist(current["ttft_hist"], more["ttft_hist"]))))
    change.run(changes)
    if totals:
        db.session.execute(add, [dict(zip(dims, key, strict=True)) | more for key, more in totals.items()])


def upsert(events) -> None:
    """Fold a batch into both rollups inside the caller's transaction."""
    if not events:
        return
    from controlplane.costs import upstream_costs

    usage = accumulate(events, upstream_costs(events), USAGE_DIMS)
    channels = coarsen(usage, CHANNEL_DIMS)
    _fold(UsageRollup, USAGE_DIMS, usage)
    _fold(ChannelRollup, CHANNEL_DIMS, channels)
