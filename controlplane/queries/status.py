"""Service status from the hourly `channel_rollups`: per model, per group the operator shows, and
(for operators only) per channel — uptime over 24 hours, 7 days and 30 days, latency and time to
first token percentiles, error rate, the state right now, and the incidents operators wrote.

Uptime is the share of requests not answered with a 5xx (ours or the upstream's, `failures`); the
error rate counts every answer of 400 and above (the callers' mistakes too). Percentiles are read off
the summed latency histograms, so they are bucket bounds (controlplane/rollups.py). A model's state:
`outage` when an open incident says so or no enabled channel with an enabled key serves it,
`degraded` when an open incident says so or more than `DEGRADED_SHARE` of the last hour's requests
failed, `operational` otherwise.
"""
from __future__ import annotations

import fnmatch
import operator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from sqlalchemy import Text, cast, or_, select

from controlplane.extensions import db
from controlplane.models import Channel, ChannelRollup, ChannelStatus, Group, Incident, ModelPrice, utcnow
from controlplane.rollups import empty_hist, percentile

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
RECENT = timedelta(hours=1)  # what "right now" looks at
RECENT_SPAN = "recent"
SPANS = (RECENT_SPAN, *WINDOWS)  # each rollup hour falls in the first span whose start it is at or after
DEGRADED_SHARE = 0.05
DEGRADED_MIN_REQUESTS = 10  # fewer requests than this in the last hour say nothing about the state
OPERATIONAL, DEGRADED, OUTAGE = "operational", "degraded", "outage"
STATE_RANK = {OPERATIONAL: 0, DEGRADED: 1, OUTAGE: 2}


@dataclass
class Window:
    """Sums of the rollup rows of one window."""

    requests: int = 0
    errors: int = 0
    failures: int = 0
    latency_hist: list = field(default_factory=empty_hist)
    ttft_hist: list = field(default_factory=empty_hist)

    def add(self, other: "Window") -> None:
        self.add_counts(other.requests, other.errors, other.failures, other.latency_hist, other.ttft_hist)

    def add_counts(self, requests: int, errors: int, failures: int, latency: list | None, ttft: list | None) -> None:
        self.requests += requests
        self.errors += errors
        self.failures += failures
        if latency:  # element-wise in C: 30 days of hourly rows pass through here
            self.latency_hist = list(map(operator.add, self.latency_hist, latency))
        if ttft:
            self.ttft_hist = list(map(operator.add, self.ttft_hist, ttft))

    @property
    def uptime(self) -> float | None:
        return (self.requests - self.failures) / self.requests if self.requests else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def as_dict(self) -> dict:
        return {"requests": self.requests, "uptime": self.uptime, "error_rate": self.error_rate,
                "latency_p50_ms": percentile(self.latency_hist, 0.5), "latency_p95_ms": percentile(self.latency_hist, 0.95),
                "ttft_p50_ms": percentile(self.ttft_hist, 0.5), "ttft_p95_ms": percentile(self.ttft_hist, 0.95)}


@dataclass
class Entry:
    """One line of the page: a model (in a group, or on a channel) with its windows and state."""

    name: str
    state: str = OPERATIONAL
    windows: dict[str, Window] = field(default_factory=lambda: {w: Window() for w in WINDOWS})
    recent: Window = field(default_factory=Window)

    def add(self, span: str, part: Window) -> None:
        """Add the sums of one span (`RECENT_SPAN` or a window's name) to every window holding it."""
        if span == RECENT_SPAN:
            self.recent.add(part)
        for name in SPANS[max(SPANS.index(span), 1):]:  # the last hour is in every window too
            self.windows[name].add(part)

    def settle(self, serving: bool, incidents: list[Incident]) -> None:
        """The state right now: the worst of what the routes, the last hour and the incidents say."""
        state = OPERATIONAL if serving else OUTAGE
        if self.recent.requests >= DEGRADED_MIN_REQUESTS and self.recent.failures > DEGRADED_SHARE * self.recent.requests:
            state = _worst(state, DEGRADED)
        for incident in incidents:
            if incident.affects(self.name):
                state = _worst(state, incident.impact)
        self.state = state

    def as_dict(self) -> dict:
        return {"state": self.state, "windows": {name: w.as_dict() for name, w in self.windows.items()}}


@dataclass
class Section:
    """A group of entries: every model, one customer group's models, or one channel's."""

    name: str
    entries: list[Entry]
    status: str = ""  # a channel's own state (operators' view)

    @property
    def state(self) -> str:
        return max((e.state for e in self.entries), key=STATE_RANK.__getitem__, default=OPERATIONAL)


@dataclass
class Report:
    generated_at: datetime
    models: list[Entry]
    groups: list[Section]
    incidents: list[Incident]  # open ones first, then those that ended in the last 30 days
    channels: list[Section] = field(default_factory=list)

    @property
    def state(self) -> str:
        return max((e.state for e in self.models), key=STATE_RANK.__getitem__, default=OPERATIONAL)

    @property
    def open_incidents(self) -> list[Incident]:
        return [i for i in self.incidents if i.open_at(self.generated_at)]


# Plain rows, histograms as JSON text (cast in SQL: psycopg would parse JSONB itself) parsed by orjson: a 30-day read is every (hour, model,
# channel) with traffic, tens of thousands of rows on a busy gateway.
_COLUMNS = (ChannelRollup.bucket, ChannelRollup.model, ChannelRollup.channel_id, ChannelRollup.requests, ChannelRollup.errors,
            ChannelRollup.failures, cast(ChannelRollup.latency_hist, Text), cast(ChannelRollup.ttft_hist, Text))


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _worst(a: str, b: str) -> str:
    return a if STATE_RANK.get(a, 0) >= STATE_RANK.get(b, 0) else b


def _public_models(channel: Channel) -> set[str]:
    return set(channel.models or ()) | set((channel.model_map or {}).keys())


def _serves(channel: Channel) -> bool:
    """The channel can take a request now: enabled, with an enabled key."""
    return channel.status == ChannelStatus.ENABLED.value and any(k.status == ChannelStatus.ENABLED.value for k in channel.keys)


def _open_to(channel: Channel, group: Group) -> bool:
    return not channel.groups or group.name in channel.groups


def _allowed(group: Group, model: str) -> bool:
    return not group.model_patterns or any(fnmatch.fnmatchcase(model, p) for p in group.model_patterns)


def incidents_since(start: datetime) -> list[Incident]:
    rows = db.session.scalars(select(Incident).where(or_(Incident.ended_at.is_(None), Incident.ended_at >= start))
                              .order_by(Incident.started_at.desc(), Incident.id.desc()))
    return sorted(rows, key=lambda i: i.ended_at is not None)  # open ones first, each part newest first


def _priced(now: datetime) -> set[str]:
    return set(db.session.scalars(select(ModelPrice.model).where(ModelPrice.effective_from <= now).distinct()))


def _parts(rows, now: datetime) -> dict[tuple[str, int], dict[str, Window]]:
    """The rollup rows summed per (model, channel) and span: one pass, whatever the sections."""
    starts = [(span, _hour(now - (RECENT if span == RECENT_SPAN else WINDOWS[span]))) for span in SPANS]
    parts: dict[tuple[str, int], dict[str, Window]] = {}
    for bucket, model, channel_id, requests, errors, failures, latency, ttft in rows:
        span = next((name for name, start in starts if bucket >= start), None)
        if span is None:
            continue
        windows = parts.setdefault((model, channel_id), {})
        into = windows.get(span)
        if into is None:
            into = windows[span] = Window()
        into.add_counts(requests, errors, failures, _json(latency), _json(ttft))
    return parts


def _json(value) -> list | None:
    return orjson.loads(value) if value else None


def _entries(names, parts, now: datetime, serving, incidents: list[Incident]) -> list[Entry]:
    """One entry per model name, from the (model, channel) sums `parts` (already narrowed to the section)."""
    entries = {name: Entry(name) for name in sorted(names)}
    for (model, _channel), spans in parts:
        entry = entries.get(model)
        if entry is not None:
            for span, part in spans.items():
                entry.add(span, part)
    for entry in entries.values():
        entry.settle(serving(entry.name), incidents)
    return list(entries.values())


def report(now: datetime | None = None, with_channels: bool = False) -> Report:
    """The status of every priced model a channel not withdrawn by an operator serves; of the groups
    marked for the page; and with `with_channels`, of every channel (operators only)."""
    now = now or utcnow()
    channels = list(db.session.scalars(select(Channel).where(Channel.status != ChannelStatus.DISABLED.value).order_by(Channel.id)))
    priced = _priced(now)
    offered = {c.id: _public_models(c) & priced for c in channels}
    parts = _parts(db.session.execute(select(*_COLUMNS).where(ChannelRollup.bucket >= _hour(now - max(WINDOWS.values())))), now)
    incidents = incidents_since(now - max(WINDOWS.values()))
    live = [i for i in incidents if i.open_at(now)]
    models = set().union(*offered.values()) if offered else set()

    def serving_among(chosen: list[Channel]):
        up = {m for c in chosen if _serves(c) for m in offered[c.id]}
        return lambda model: model in up

    # Rows without a channel (no route could take the request) count against the model overall.
    every = _entries(models, [(k, v) for k, v in parts.items() if k[1] == 0 or k[1] in offered], now, serving_among(channels), live)
    groups = []
    for group in db.session.scalars(select(Group).where(Group.on_status_page.is_(True)).order_by(Group.name)):
        mine = [c for c in channels if _open_to(c, group)]
        ids = {c.id for c in mine}
        names = {m for c in mine for m in offered[c.id] if _allowed(group, m)}
        groups.append(Section(group.name, _entries(names, [(k, v) for k, v in parts.items() if k[1] in ids], now, serving_among(mine), live)))
    sections = []
    if with_channels:
        for channel in channels:
            own = [(k, v) for k, v in parts.items() if k[1] == channel.id]
            names = _public_models(channel) | {model for (model, _), _ in own}
            up = _serves(channel)
            sections.append(Section(channel.name, _entries(names, own, now, lambda _m, up=up: up, live), status=channel.status))
    return Report(now, every, groups, incidents, sections)


def incident_dict(incident: Incident) -> dict:
    return {"id": incident.id, "title": incident.title, "body": incident.body, "impact": incident.impact,
            "models": list(incident.models or []), "started_at": incident.started_at.isoformat(),
            "ended_at": incident.ended_at.isoformat() if incident.ended_at else None}


def public_document(rep: Report) -> dict:
    """What anyone may read: models, the groups operators chose to show, incidents. No channel names,
    upstream addresses or keys — those are the operators' view only."""
    return {
        "object": "status",
        "generated_at": rep.generated_at.isoformat(),
        "state": rep.state,
        "windows": list(WINDOWS),
        "models": [{"id": e.name, **e.as_dict()} for e in rep.models],
        "groups": [{"name": s.name, "state": s.state, "models": [{"id": e.name, **e.as_dict()} for e in s.entries]} for s in rep.groups],
        "incidents": [incident_dict(i) for i in rep.incidents],
    }

__all__ = ["WINDOWS", "Entry", "Report", "Section", "Window", "incident_dict", "incidents_since", "public_document", "report"]
