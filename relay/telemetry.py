"""Prometheus metrics of the relay: what each request did, gathered in plain Python on the request
path and written to prometheus-client's values by a background greenlet about once a second.

Why not call prometheus-client per request: with several processes its values live in mmap'ed files
behind a lock, and one request touches ~10 of them (requests, five token kinds, cost, two histograms)
— measured ~20 µs a request. Here a request costs one `observe()` (a few dict and list updates, no
lock, no syscall); the flush writes one aggregated increment per label set and bucket, whatever the
traffic. Scrapes see at most one flush interval of lag (the scraping process flushes its own first).

Labels stay bounded: models and channels are cut to those the current snapshot knows at flush time
(others are `other`), status codes to three digits, and the buffer between flushes to `MAX_CELLS`
label sets (more collapse into `other`).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from relay.metrics import COUNTERS

if TYPE_CHECKING:
    from relay.snapshot import Snapshot
    from relay.usage import UsageEvent

log = logging.getLogger(__name__)

# Upper bounds in milliseconds (the usage event's unit); exported in seconds.
LATENCY_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000)
TTFT_MS = (50, 100, 250, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000)
TOKEN_KINDS = ("input", "cache_read", "cache_write", "output", "reasoning")
OTHER = "other"
NONE = "none"
MAX_CELLS = 4096  # label sets buffered between two flushes; a burst of unknown models cannot grow it further
FLUSH_SECONDS = 1.0


class Cell:
    """Everything observed for one (model, channel) since the last flush."""

    __slots__ = ("statuses", "tokens", "cost", "latency", "latency_ms", "ttft", "ttft_ms", "retries", "ejections")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.tokens = [0, 0, 0, 0, 0]  # in TOKEN_KINDS order
        self.cost = 0
        self.latency = [0] * (len(LATENCY_MS) + 1)  # per bucket, the last one +Inf
        self.latency_ms = 0
        self.ttft = [0] * (len(TTFT_MS) + 1)
        self.ttft_ms = 0
        self.retries = 0
        self.ejections = 0


class Families:
    """The prometheus-client metric families. Built after the process knows whether it writes to a
    multiprocess directory (prometheus-client picks its value class at construction)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        by_route = ["model", "channel"]
        self.requests = Counter("switchboard_relay_requests", "Requests of known keys, by how they ended", [*by_route, "status"], registry=registry)
        self.tokens = Counter("switchboard_relay_tokens", "Tokens billed", [*by_route, "kind"], registry=registry)
        self.cost = Counter("switchboard_relay_cost_micro_usd", "Charged, in micro-dollars", by_route, registry=registry)
        self.latency = Histogram("switchboard_relay_request_duration_seconds", "Request duration, start to settle", by_route,
                                 buckets=[ms / 1000 for ms in LATENCY_MS], registry=registry)
        self.ttft = Histogram("switchboard_relay_time_to_first_token_seconds", "Time to the first streamed output", by_route,
                              buckets=[ms / 1000 for ms in TTFT_MS], registry=registry)
        self.retries = Counter("switchboard_relay_retries", "Upstream attempts after the first", by_route, registry=registry)
        self.ejections = Counter("switchboard_relay_ejections", "Ejections (of a channel or one of its keys) the relay's failovers caused",
                                 ["channel"], registry=registry)
        self.http_requests = Counter("switchboard_relay_http_requests", "Every HTTP request the relay answered (health and metrics included)",
                                     registry=registry)
        self.redis_round_trips = Counter("switchboard_relay_redis_round_trips", "Round trips to Redis (a pipeline is one)", registry=registry)
        self.in_flight = Gauge("switchboard_relay_in_flight_requests", "Requests being answered now", multiprocess_mode="livesum", registry=registry)
        self.snapshot_version = Gauge("switchboard_relay_snapshot_version", "Routing snapshot version in use (the lowest of the processes)",
                                      multiprocess_mode="livemin", registry=registry)
        self.snapshot_age = Gauge("switchboard_relay_snapshot_age_seconds",
                                  "Seconds since the process last confirmed with Redis that its snapshot is the newest (the highest of the processes)",
                                  multiprocess_mode="livemax", registry=registry)
        self.snapshot_built = Gauge("switchboard_relay_snapshot_built_timestamp_seconds", "When the snapshot in use was built (the oldest)",
                                    multiprocess_mode="livemin", registry=registry)


def _status(code: int) -> str:
    return str(code) if 100 <= code <= 599 else OTHER


class Telemetry:
    """One per process (`TELEMETRY`): `observe()` on the request path, `flush()` off it."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str | None, int | None], Cell] = {}
        self.families: Families | None = None
        self.sent_requests = 0  # COUNTERS already written
        self.sent_round_trips = 0

    def observe(self, event: UsageEvent) -> None:
        """One finished request (its usage event): the only call on the request path. Never raises:
        a request is settled and billed whatever its metrics do."""
        try:
            self._observe(event)
        except Exception:
            log.exception("metrics of %s not recorded", event.request_id)

    def _observe(self, event: UsageEvent) -> None:
        key = (event.model, event.channel_id)
        cell = self.cells.get(key)
        if cell is None:
            if len(self.cells) >= MAX_CELLS:
                key = (OTHER, event.channel_id)  # channel ids are the relay's own: few
                cell = self.cells.get(key)
            if cell is None:
                cell = self.cells[key] = Cell()
        statuses = cell.statuses
        statuses[event.status] = statuses.get(event.status, 0) + 1
        tokens = cell.tokens
        tokens[0] += event.input_tokens
        tokens[1] += event.cache_read_tokens
        tokens[2] += event.cache_write_tokens
        tokens[3] += event.output_tokens
        tokens[4] += event.reasoning_tokens
        cell.cost += event.cost
        latency = event.latency_ms
        if latency is not None:
            cell.latency[bisect_left(LATENCY_MS, latency)] += 1
            cell.latency_ms += latency
        ttft = event.ttft_ms
        if ttft is not None:
            cell.ttft[bisect_left(TTFT_MS, ttft)] += 1
            cell.ttft_ms += ttft
        trace = event.trace
        for entry in reversed(trace):  # the last attempt is numbered; it is near the end
            if entry.get("step") == "attempt":
                number = entry.get("n", 1)
                if number > 1:  # failovers happened: count them, and the ejections they caused
                    cell.retries += number - 1
                    cell.ejections += sum(1 for e in trace if e.get("step") == "health"
                                          and ("key_ejected_until" in e or "channel_ejected_until" in e))
                break

    def flush(self, snapshot: Snapshot | None, in_flight: int | None = None, snapshot_checked_at: float | None = None) -> None:
        """Write what was observed since the last flush, and the process's gauges."""
        families = self.families
        if families is None:
            families = self.families = Families()
        cells, self.cells = self.cells, {}
        models, channels = _known(snapshot)
        merged: dict[tuple[str, str], Cell] = {}
        for (model, channel_id), cell in cells.items():
            labels = (NONE if model is None else model if model in models else OTHER,
                      NONE if channel_id is None else str(channel_id) if channel_id in channels else OTHER)
            into = merged.get(labels)
            if into is None:
                merged[labels] = cell
            else:
                _merge(into, cell)
        for (model, channel), cell in merged.items():
            for status, count in cell.statuses.items():
                families.requests.labels(model, channel, _status(status)).inc(count)
            for kind, count in zip(TOKEN_KINDS, cell.tokens, strict=True):
                if count:
                    families.tokens.labels(model, channel, kind).inc(count)
            if cell.cost:
                families.cost.labels(model, channel).inc(cell.cost)
            _add_buckets(families.latency.labels(model, channel), cell.latency, cell.latency_ms)
            _add_buckets(families.ttft.labels(model, channel), cell.ttft, cell.ttft_ms)
            if cell.retries:
                families.retries.labels(model, channel).inc(cell.retries)
            if cell.ejections:
                families.ejections.labels(channel).inc(cell.ejections)
        requests, round_trips = COUNTERS.requests, COUNTERS.redis_round_trips
        if requests > self.sent_requests:
            families.http_requests.inc(requests - self.sent_requests)
        if round_trips > self.sent_round_trips:
            families.redis_round_trips.inc(round_trips - self.sent_round_trips)
        self.sent_requests, self.sent_round_trips = requests, round_trips
        if in_flight is not None:
            families.in_flight.set(in_flight)
        if snapshot is not None and snapshot.version:
            families.snapshot_version.set(snapshot.version)
            families.snapshot_built.set(snapshot.built_at)
        if snapshot_checked_at:
            families.snapshot_age.set(max(0.0, time.time() - snapshot_checked_at))


_KNOWN: dict[int, tuple[frozenset[str], frozenset[int]]] = {}


def _known(snapshot: Snapshot | None) -> tuple[frozenset[str], frozenset[int]]:
    """The model names and channel ids a snapshot configures: the bound on label values (computed
    once per snapshot version)."""
    if snapshot is None:
        return frozenset(), frozenset()
    found = _KNOWN.get(snapshot.version)
    if found is None:
        models = {m for c in snapshot.channels for m in c.public_models}
        models.update(snapshot.prices)
        found = (frozenset(models), frozenset(c.id for c in snapshot.channels))
        _KNOWN.clear()
        _KNOWN[snapshot.version] = found
    return found


def _merge(into: Cell, cell: Cell) -> None:
    for status, count in cell.statuses.items():
        into.statuses[status] = into.statuses.get(status, 0) + count
    into.tokens = [a + b for a, b in zip(into.tokens, cell.tokens, strict=True)]
    into.cost += cell.cost
    into.latency = [a + b for a, b in zip(into.latency, cell.latency, strict=True)]
    into.latency_ms += cell.latency_ms
    into.ttft = [a + b for a, b in zip(into.ttft, cell.ttft, strict=True)]
    into.ttft_ms += cell.ttft_ms
    into.retries += cell.retries
    into.ejections += cell.ejections


def _add_buckets(child: Any, counts: list[int], total_ms: int) -> None:
    """Add per-bucket counts to a histogram child as `observe()` would have one by one: prometheus-
    client keeps each bucket's own count (not cumulative) and the sum; its exposition accumulates.
    tests/unit/test_telemetry.py checks this equals `observe()` so a library change cannot slip by."""
    if not any(counts):
        return
    child._sum.inc(total_ms / 1000)
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)


TELEMETRY = Telemetry()


def prepare_multiprocess(directory: Path) -> None:
    """Before the relay forks: an empty directory for every process's metric files, named to
    prometheus-client (which reads PROMETHEUS_MULTIPROC_DIR when it builds a value)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import values

    # In case prometheus-client was imported before the variable was set (it picks its value class then).
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # untyped in prometheus-client


def process_ended(pid: int) -> None:
    """A relay process is gone: its live gauges stop counting (its counters stay, as they must)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]  # untyped in prometheus-client


def flush_forever(flush: Callable[[], None]) -> None:
    """The flusher greenlet: `flush` writes the process's telemetry with its gauges."""
    import gevent

    while True:
        gevent.sleep(FLUSH_SECONDS)
        try:
            flush()
        except Exception:
            log.exception("metrics flush failed")
