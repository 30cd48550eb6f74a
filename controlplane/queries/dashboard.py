"""The operator dashboard's numbers, read from `channel_rollups` (never from raw request logs).

A range picks the rollup rows since its start; totals, time series and breakdowns (by model or by
channel) are sums of those rows, and latency percentiles come from their summed histograms.
Margin is revenue minus upstream cost over channels whose cost is configured.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select

from controlplane.extensions import db
from controlplane.models import Channel, ChannelEvent, ChannelKey, ChannelRollup, utcnow
from controlplane.rollups import SUM_FIELDS, add_hist, empty_hist, percentile

RANGES = {"hour": (timedelta(hours=1), "hour"), "day": (timedelta(days=1), "hour"),
          "7d": (timedelta(days=7), "hour"), "30d": (timedelta(days=30), "day")}
RANGE_LABELS = {"hour": "Last hour", "day": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days"}
BREAKDOWNS = ("model", "channel")
TOP = 6  # series drawn per breakdown; the rest are summed into "other"


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    failures: int = 0
    cost: int = 0
    upstream_cost: int = 0
    costed_revenue: int = 0  # revenue on channels with a configured cost
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    latency_hist: list = field(default_factory=empty_hist)
    ttft_hist: list = field(default_factory=empty_hist)

    def add(self, row, costed: bool) -> None:
        for name in SUM_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(row, name))
        if costed:
            self.costed_revenue += row.cost
        self.latency_hist = add_hist(self.latency_hist, row.latency_hist)
        self.ttft_hist = add_hist(self.ttft_hist, row.ttft_hist)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens + self.output_tokens + self.reasoning_tokens

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def margin(self) -> int | None:
        return self.costed_revenue - self.upstream_cost if self.costed_revenue or self.upstream_cost else None

    def latency(self, q: float) -> int | None:
        return percentile(self.latency_hist, q)

    def ttft(self, q: float) -> int | None:
        return percentile(self.ttft_hist, q)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "error_rate": self.error_rate, "revenue_micro_usd": self.cost,
                "upstream_cost_micro_usd": self.upstream_cost, "margin_micro_usd": self.margin, "tokens": self.tokens,
                "latency_p50_ms": self.latency(0.5), "latency_p95_ms": self.latency(0.95),
                "ttft_p50_ms": self.ttft(0.5), "ttft_p95_ms": self.ttft(0.95)}


def start_of(range_name: str, now: datetime) -> tuple[datetime, str]:
    span, step = RANGES[range_name]
    start = (now - span).replace(minute=0, second=0, microsecond=0)
    if step == "day":
        start = start.replace(hour=0)
    return start, step


def _rows(start: datetime):
    return list(db.session.scalars(select(ChannelRollup).where(ChannelRollup.bucket >= start)))


def _step_of(bucket: datetime, step: str) -> datetime:
    return bucket.replace(hour=0) if step == "day" else bucket


def _steps(start: datetime, now: datetime, step: str) -> list[datetime]:
    delta = timedelta(days=1) if step == "day" else timedelta(hours=1)
    out, moment = [], start
    while moment <= now:
        out.append(moment)
        moment += delta
    return out


@dataclass
class Report:
    range: str
    by: str
    start: datetime
    totals: Totals
    breakdown: list[tuple[str, str, Totals, bool]]  # (key, label, totals, cost configured)
    labels: list[datetime]
    per_step: list[Totals]
    per_key_requests: dict[str, list[int]]


def report(range_name: str = "day", by: str = "model", now: datetime | None = None) -> Report:
    range_name = range_name if range_name in RANGES else "day"
    by = by if by in BREAKDOWNS else "model"
    now = now or utcnow()
    start, step = start_of(range_name, now)
    channels = {c.id: (c.name, c.cost_bp is not None) for c in db.session.execute(select(Channel.id, Channel.name, Channel.cost_bp))}
    labels = _steps(start, now, step)
    index = {moment: i for i, moment in enumerate(labels)}
    totals, per_step = Totals(), [Totals() for _ in labels]
    groups: dict[str, Totals] = {}
    by_key_step: dict[str, list[int]] = {}
    for row in _rows(start):
        costed = channels.get(row.channel_id, ("", False))[1]
        key = row.model if by == "model" else str(row.channel_id)
        totals.add(row, costed)
        groups.setdefault(key, Totals()).add(row, costed)
        i = index.get(_step_of(row.bucket, step))
        if i is not None:
            per_step[i].add(row, costed)
            by_key_step.setdefault(key, [0] * len(labels))[i] += row.requests
    ranked = sorted(groups.items(), key=lambda kv: -kv[1].requests)
    breakdown = []
    for key, group_totals in ranked:
        if by == "channel":
            name, costed = channels.get(int(key), (f"deleted channel {key}", False))
            breakdown.append((key, name if key != "0" else "no channel (refused)", group_totals, costed))
        else:
            breakdown.append((key, key or "(no model)", group_totals, group_totals.costed_revenue > 0))
    series = {label: by_key_step[key] for key, label, _, _ in breakdown[:TOP]}
    if len(breakdown) > TOP:
        series["other"] = [sum(by_key_step[k][i] for k, _, _, _ in breakdown[TOP:]) for i in range(len(labels))]
    return Report(range_name, by, start, totals, breakdown, labels, per_step, series)


def chart_data(rep: Report) -> dict:
    """What the dashboard's charts draw (money in µ$; static/money.js formats it)."""
    return {
        "range": rep.range, "by": rep.by,
        "labels": [moment.isoformat() for moment in rep.labels],
        "requests": [t.requests for t in rep.per_step],
        "errors": [t.errors for t in rep.per_step],
        "revenue_micro_usd": [t.cost for t in rep.per_step],
        "upstream_cost_micro_usd": [t.upstream_cost for t in rep.per_step],
        "latency_p50_ms": [t.latency(0.5) for t in rep.per_step],
        "latency_p95_ms": [t.latency(0.95) for t in rep.per_step],
        "ttft_p50_ms": [t.ttft(0.5) for t in rep.per_step],
        "ttft_p95_ms": [t.ttft(0.95) for t in rep.per_step],
        "by_requests": rep.per_key_requests,
        "totals": rep.totals.as_dict(),
        "breakdown": [{"key": key, "label": label, **t.as_dict()} for key, label, t, _ in rep.breakdown],
    }


def channel_health(limit: int = 10) -> dict:
    """Channels and keys per state, and the latest state transitions."""
    channels = dict(db.session.execute(select(Channel.status, func.count()).group_by(Channel.status)).all())
    keys = dict(db.session.execute(select(ChannelKey.status, func.count()).group_by(ChannelKey.status)).all())
    events = list(db.session.execute(
        select(ChannelEvent, Channel.name).join(Channel, Channel.id == ChannelEvent.channel_id)
        .order_by(ChannelEvent.id.desc()).limit(limit)))
    return {"channels": channels, "key_states": keys, "events": events}
