"""Latency histograms and rollup upserts (pure arithmetic + one SQL write path for ingestion).

Each ingested batch is folded twice: into `usage_rollups` (per account and key, for usage pages)
and into `channel_rollups` (per model and channel only, for the operator dashboard).
"""
from __future__ import annotations

import bisect
from datetime import datetime, timezone

from sqlalchemy import and_, or_, select

from controlplane.extensions import db
from controlplane.models.rollups import ChannelRollup, UsageRollup

# Upper bounds (ms) of the histogram buckets; the last bucket is everything above.
BOUNDS_MS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000,
             7_500, 10_000, 15_000, 20_000, 30_000, 60_000, 120_000, 300_000)
BUCKETS = len(BOUNDS_MS) + 1
TOKEN_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
SUM_FIELDS = ("requests", "errors", "cost", "upstream_cost", *TOKEN_FIELDS)
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
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
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
    """Sum a batch of usage events per rollup row; `upstream` maps request ids to upstream cost."""
    upstream = upstream or {}
    with_user = "account_id" in dims
    rows: dict[tuple, dict] = {}
    for e in events:
        row = rows.setdefault(dims_of(e, dims), _blank(with_user))
        if with_user:
            row["user_id"] = e.user_id or row["user_id"]
        row["requests"] += 1
        row["errors"] += 1 if e.status >= 400 else 0
        row["cost"] += e.cost
        row["upstream_cost"] += upstream.get(e.request_id, 0)
        for f in TOKEN_FIELDS:
            row[f] += getattr(e, f)
        if e.latency_ms is not None:
            row["latency_hist"][bucket_index(e.latency_ms)] += 1
        if e.ttft_ms is not None:
            row["ttft_hist"][bucket_index(e.ttft_ms)] += 1
    return rows


def _fold(model, dims: tuple[str, ...], totals: dict[tuple, dict]) -> None:
    """Add `totals` to the rows of `model` (rows locked on PostgreSQL), creating missing ones."""
    if not totals:
        return
    keys = list(totals)
    clauses = [and_(*(getattr(model, d) == v for d, v in zip(dims, key, strict=True))) for key in keys]
    existing = {}
    for i in range(0, len(clauses), 200):
        for row in db.session.scalars(select(model).where(or_(*clauses[i:i + 200])).with_for_update()):
            existing[tuple(getattr(row, d) for d in dims)] = row
    for key, add in totals.items():
        row = existing.get(key)
        if row is None:
            db.session.add(model(**dict(zip(dims, key, strict=True)), **add))
            continue
        for f in SUM_FIELDS:
            setattr(row, f, getattr(row, f) + add[f])
        row.latency_hist = add_hist(row.latency_hist, add["latency_hist"])
        row.ttft_hist = add_hist(row.ttft_hist, add["ttft_hist"])


def upsert(events) -> None:
    """Fold a batch into both rollups inside the caller's transaction."""
    if not events:
        return
    from controlplane.costs import upstream_costs

    upstream = upstream_costs(events)
    _fold(UsageRollup, USAGE_DIMS, accumulate(events, upstream, USAGE_DIMS))
    _fold(ChannelRollup, CHANNEL_DIMS, accumulate(events, upstream, CHANNEL_DIMS))
