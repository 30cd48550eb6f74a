"""Usage figures for the console, from the hourly rollups only (never by scanning request logs):
time series by hour / day / week / month with an optional breakdown, and totals with latency
percentiles. Periods are UTC; empty periods are zeros, so charts show gaps honestly."""
from __future__ import annotations

import operator
from collections import defaultdict
from datetime import datetime, timedelta

import orjson
from sqlalchemy import String, func, select, type_coerce

from controlplane import rollups
from controlplane.extensions import db
from controlplane.models import UsageRollup, utcnow

TOKENS = rollups.TOKEN_FIELDS
RANGES = {  # name → (granularity, periods shown, label); the last period is the current one
    "24h": ("hour", 24, "24 hours"),
    "7d": ("day", 7, "7 days"),
    "30d": ("day", 30, "30 days"),
    "12w": ("week", 12, "12 weeks"),
    "12m": ("month", 12, "12 months"),
}
DIMENSIONS = {"model": UsageRollup.model, "key": UsageRollup.api_key_id}
TOP = 6  # series shown in a breakdown; the rest add up to "other"


def period_of(moment: datetime, granularity: str) -> datetime:
    hour = moment.replace(minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return hour
    day = hour.replace(hour=0)
    if granularity == "day":
        return day
    if granularity == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    return day.replace(day=1)


def next_period(moment: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return moment + timedelta(hours=1)
    if granularity == "day":
        return moment + timedelta(days=1)
    if granularity == "week":
        return moment + timedelta(weeks=1)
    return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)


def periods(since: datetime, granularity: str, until: datetime | None = None) -> list[datetime]:
    until = until or utcnow()
    found, cursor = [], period_of(since, granularity)
    while cursor <= until:
        found.append(cursor)
        cursor = next_period(cursor, granularity)
    return found


def range_start(name: str, now: datetime | None = None) -> tuple[str, datetime]:
    """The granularity of a named range and the start of its first period."""
    granularity, count, _ = RANGES.get(name, RANGES["7d"])
    start = period_of(now or utcnow(), granularity)
    for _ in range(count - 1):
        start = period_of(start - timedelta(hours=1), granularity)  # the period just before
    return granularity, start


def series(clauses: list, since: datetime, granularity: str, by: str | None) -> dict:
    """{"labels": [...], "series": [{"name", "cost", "requests", "tokens"}]} per period."""
    dim = DIMENSIONS.get(by) if by else None
    columns = [UsageRollup.bucket, func.sum(UsageRollup.cost), func.sum(UsageRollup.requests),
               func.sum(sum(getattr(UsageRollup, f) for f in TOKENS))]
    group = [UsageRollup.bucket] + ([dim] if dim is not None else [])
    query = select(*columns, *([dim] if dim is not None else [])).where(*clauses, UsageRollup.bucket >= since).group_by(*group)
    labels = periods(since, granularity)
    index = {p: i for i, p in enumerate(labels)}
    data: dict = defaultdict(lambda: {"cost": [0] * len(labels), "requests": [0] * len(labels), "tokens": [0] * len(labels)})
    for row in db.session.execute(query):
        name = str(row[4]) if dim is not None else "all"
        i = index.get(period_of(row[0], granularity))
        if i is None:
            continue
        for field, value in zip(("cost", "requests", "tokens"), row[1:4], strict=True):
            data[name][field][i] += int(value or 0)
    ranked = sorted(data.items(), key=lambda kv: -sum(kv[1]["cost"]))
    if len(ranked) > TOP:
        other = {f: [sum(v[f][i] for _, v in ranked[TOP - 1:]) for i in range(len(labels))] for f in ("cost", "requests", "tokens")}
        ranked = ranked[:TOP - 1] + [("other", other)]
    return {"granularity": granularity, "labels": [p.isoformat() for p in labels],
            "series": [{"name": name, **values} for name, values in ranked]}


def _blank(name=None) -> dict:
    return {"name": name, "requests": 0, "errors": 0, "cost": 0, "hist": None, **{f: 0 for f in TOKENS}}


def _finish(t: dict) -> dict:
    hist = t.pop("hist")
    t["p50"], t["p95"] = rollups.percentile(hist, 0.5), rollups.percentile(hist, 0.95)
    return t


def breakdown(clauses: list, since: datetime) -> tuple[dict, list[dict], list[dict]]:
    """(overall, per key, per model) totals: requests, errors, the five token kinds, cost and
    latency p50/p95. Sums are grouped in SQL; histograms are added up here (they are JSON)."""
    sums = [func.sum(UsageRollup.requests), func.sum(UsageRollup.errors), func.sum(UsageRollup.cost),
            *(func.sum(getattr(UsageRollup, f)) for f in TOKENS)]
    where = [*clauses, UsageRollup.bucket >= since]
    overall, keys, models = _blank(), {}, {}
    grouped = select(UsageRollup.api_key_id, UsageRollup.model, *sums).where(*where).group_by(UsageRollup.api_key_id, UsageRollup.model)
    for key_id, model, *values in db.session.execute(grouped):
        for t in (overall, keys.setdefault(key_id, _blank(key_id)), models.setdefault(model, _blank(model))):
            for field, value in zip(("requests", "errors", "cost", *TOKENS), values, strict=True):
                t[field] += int(value or 0)
    # A month of hourly rows is tens of thousands of histograms: read them as raw JSON text (no ORM
    # type processing), parse with orjson and add them element-wise in C.
    hists: dict[tuple, list[int]] = {}
    raw = select(UsageRollup.api_key_id, UsageRollup.model, type_coerce(UsageRollup.latency_hist, String)).where(*where)
    for key_id, model, hist in db.session.execute(raw):
        values = orjson.loads(hist) if isinstance(hist, (str, bytes)) else hist  # psycopg hands JSONB over parsed
        if values:
            acc = hists.get((key_id, model))
            hists[(key_id, model)] = values if acc is None else list(map(operator.add, acc, values))
    for (key_id, model), hist in hists.items():
        for t in (overall, keys[key_id], models[model]):
            t["hist"] = rollups.add_hist(t["hist"], hist)
    by_cost = lambda rows: sorted((_finish(t) for t in rows.values()), key=lambda t: -t["cost"])  # noqa: E731
    return _finish(overall), by_cost(keys), by_cost(models)
