"""Latency histograms and rollup upserts (pure arithmetic + one SQL write path for ingestion)."""
from __future__ import annotations

import bisect
from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import and_, or_, select

from controlplane.extensions import db
from controlplane.models.rollups import UsageRollup

# Upper bounds (ms) of the histogram buckets; the last bucket is everything above.
BOUNDS_MS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000,
             7_500, 10_000, 15_000, 20_000, 30_000, 60_000, 120_000, 300_000)
BUCKETS = len(BOUNDS_MS) + 1
TOKEN_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


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


def dims_of(event) -> tuple:
    return (hour_of(event.started_at), event.account_id or 0, event.api_key_id or 0, event.model or "", event.channel_id or 0)


def accumulate(events) -> dict[tuple, dict]:
    """Sum a batch of usage events per rollup row."""
    rows: dict[tuple, dict] = defaultdict(lambda: {"requests": 0, "errors": 0, "cost": 0, "upstream_cost": 0, "user_id": 0,
                                                   "latency_hist": empty_hist(), "ttft_hist": empty_hist(), **{f: 0 for f in TOKEN_FIELDS}})
    for e in events:
        row = rows[dims_of(e)]
        row["user_id"] = e.user_id or row["user_id"]
        row["requests"] += 1
        row["errors"] += 1 if e.status >= 400 else 0
        row["cost"] += e.cost
        row["upstream_cost"] += getattr(e, "upstream_cost", 0) or 0
        for f in TOKEN_FIELDS:
            row[f] += getattr(e, f)
        if e.latency_ms is not None:
            row["latency_hist"][bucket_index(e.latency_ms)] += 1
        if e.ttft_ms is not None:
            row["ttft_hist"][bucket_index(e.ttft_ms)] += 1
    return rows


def upsert(events) -> None:
    """Fold a batch into the rollups inside the caller's transaction (rows locked on PostgreSQL)."""
    totals = accumulate(events)
    if not totals:
        return
    keys = list(totals)
    clauses = [and_(UsageRollup.bucket == b, UsageRollup.account_id == a, UsageRollup.api_key_id == k,
                    UsageRollup.model == m, UsageRollup.channel_id == c) for b, a, k, m, c in keys]
    existing = {}
    for i in range(0, len(clauses), 200):
        query = select(UsageRollup).where(or_(*clauses[i:i + 200])).with_for_update()
        for row in db.session.scalars(query):
            existing[(row.bucket, row.account_id, row.api_key_id, row.model, row.channel_id)] = row
    for dims, add in totals.items():
        row = existing.get(dims)
        if row is None:
            bucket, account_id, api_key_id, model, channel_id = dims
            db.session.add(UsageRollup(bucket=bucket, account_id=account_id, api_key_id=api_key_id, model=model,
                                       channel_id=channel_id, **add))
            continue
        row.requests += add["requests"]
        row.errors += add["errors"]
        row.cost += add["cost"]
        row.upstream_cost += add["upstream_cost"]
        for f in TOKEN_FIELDS:
            setattr(row, f, getattr(row, f) + add[f])
        row.latency_hist = add_hist(row.latency_hist, add["latency_hist"])
        row.ttft_hist = add_hist(row.ttft_hist, add["ttft_hist"])
