"""The control plane's operator endpoints: `/healthz` (the process answers), `/readyz` (SQL and Redis
answer), `/metrics` (state read from SQL and Redis when scraped), and a request id on every request
(`X-Request-Id` in the answer, on every log record while it runs: relay/logs.py).

The web's metrics are read at scrape time from the shared state, so whichever gunicorn worker
answers gives the same figures and no per-worker files are needed. Under `switchboard up` the relay
runs in this process and its own metrics (relay/telemetry.py, the default registry) come too.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, g, jsonify, request
from sqlalchemy import func, select, text

from relay import redis_keys
from relay.logs import REQUEST_ID
from relay.ops_http import CONTENT_TYPE, MetricsAccess, exposition, readiness

# A caller's X-Request-Id is kept (a proxy's id ties its log to ours) when it looks like an id.
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def init_app(app: Flask) -> None:
    access = MetricsAccess.from_env()

    @app.before_request
    def _request_id() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _GIVEN_ID.fullmatch(given) else "web_" + _random_hex()
        REQUEST_ID.set(g.request_id)

    @app.after_request
    def _tag(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-Id"] = request_id
        return response

    @app.teardown_request
    def _forget(_error: BaseException | None) -> None:
        REQUEST_ID.set(None)

    @app.get("/healthz")
    def healthz() -> Any:
        """Liveness: the process answers. What it depends on is /readyz's question."""
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Any:
        checks = _checks(app)
        relay = app.config.get("EMBEDDED_RELAY_APP")
        if relay is not None:  # `switchboard up`: the relay in this process (snapshot, draining) too
            checks.update({f"relay_{name}": result for name, result in relay.ready_checks().items() if name != "redis"})
        status, body = readiness(checks)
        return jsonify(body), status

    @app.get("/metrics")
    def metrics() -> Any:
        if not access.allows(request.headers.get("Authorization"), request.remote_addr):
            return jsonify(error={"message": "Not found", "code": "not_found"}), 404
        embedded = app.config.get("EMBEDDED_RELAY_APP") is not None
        if embedded:
            app.config["EMBEDDED_RELAY_APP"].flush_metrics()
        body = exposition(multiprocess=False, extra=lambda: ControlPlaneState(app)) if embedded else _state_only(app)
        return Response(body, 200, {"Content-Type": CONTENT_TYPE})


def _random_hex() -> str:
    import os

    return os.urandom(12).hex()


def _state_only(app: Flask) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(ControlPlaneState(app))
    return generate_latest(registry)


def _checks(app: Flask) -> dict[str, str]:
    from controlplane.extensions import db

    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        db.session.rollback()
        checks["database"] = f"unreachable: {type(error).__name__}"
    try:
        app.extensions["switchboard"].redis.ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = f"unreachable: {type(error).__name__}"
    return checks


class ControlPlaneState:
    """Gauges from SQL and Redis at scrape time: channels and their keys by status and by ejection,
    the usage streams' backlog (what ingestion has not yet written) and its age, dead letters, holds."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        families: list[Any] = []
        up = GaugeMetricFamily("switchboard_up", "Whether each dependency answered this scrape", labels=["dependency"])
        families.append(up)
        try:
            families += self._sql()
            up.add_metric(["database"], 1)
        except Exception:
            from controlplane.extensions import db

            db.session.rollback()
            up.add_metric(["database"], 0)
        try:
            families += self._redis()
            up.add_metric(["redis"], 1)
        except Exception:
            up.add_metric(["redis"], 0)
        return families

    def _sql(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from controlplane.extensions import db
        from controlplane.models import Channel, ChannelKey

        out = []
        # Customers' API keys are left out: counting a million rows on every scrape is not worth it.
        for name, model, what in (("switchboard_channels", Channel, "Upstream channels by status"),
                                  ("switchboard_channel_keys", ChannelKey, "Upstream channel keys by status")):
            family = GaugeMetricFamily(name, what, labels=["status"])
            for status, count in db.session.execute(select(model.status, func.count()).group_by(model.status)):
                family.add_metric([str(status)], count)
            out.append(family)
        return out

    def _redis(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from controlplane import dead_letters
        from controlplane.extensions import db
        from controlplane.models import Channel, ChannelKey

        redis = self.app.extensions["switchboard"].redis
        now = time.time()
        entries, oldest = usage_backlog(redis)
        channel_ids = list(db.session.scalars(select(Channel.id)))
        key_ids = list(db.session.execute(select(ChannelKey.channel_id, ChannelKey.id)))
        pipe = redis.pipeline(transaction=False)
        for cid in channel_ids:
            pipe.hget(redis_keys.channel_health_key(cid), "u")
        for cid, kid in key_ids:
            pipe.hget(redis_keys.key_health_key(cid, kid), "u")
        pipe.xlen(dead_letters.DEAD_STREAM)
        for index in redis_keys.HOLDS_INDEXES:
            pipe.zcard(index)
        replies = pipe.execute()
        health = len(channel_ids) + len(key_ids)
        ejected = [float(v or 0) > now for v in replies[:health]]
        dead, holds = replies[health], sum(replies[health + 1:])
        return [
            GaugeMetricFamily("switchboard_channels_ejected", "Channels passive health has ejected now", value=sum(ejected[:len(channel_ids)])),
            GaugeMetricFamily("switchboard_channel_keys_ejected", "Channel keys passive health has ejected now", value=sum(ejected[len(channel_ids):])),
            GaugeMetricFamily("switchboard_usage_backlog_events", "Usage events in the streams not yet written to SQL (undelivered + unacknowledged)",
                              value=entries),
            GaugeMetricFamily("switchboard_usage_backlog_age_seconds", "Age of the oldest usage event not yet written to SQL (0: none waiting)",
                              value=max(0.0, now - oldest) if oldest is not None else 0.0),
            GaugeMetricFamily("switchboard_dead_letters", "Usage events ingestion could not write, waiting for an operator", value=dead),
            GaugeMetricFamily("switchboard_holds_open", "Holds open in Redis (requests in flight, and any a dead relay left)", value=holds),
        ]


def _entry_time(entry_id: bytes | str) -> float:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0]) / 1000


def usage_backlog(redis: Any) -> tuple[int, float | None]:
    """(events not yet written, when the oldest of them was appended), over every usage stream."""
    from relay.usage import USAGE_STREAMS

    total = 0
    oldest: list[float] = []
    for stream in USAGE_STREAMS:
        entries, first = _stream_backlog(redis, stream)
        total += entries
        if first is not None:
            oldest.append(first)
    return total, min(oldest) if oldest else None


def _stream_backlog(redis: Any, stream: str) -> tuple[int, float | None]:
    """One stream's: the group's unacknowledged entries plus those not yet delivered to it (every
    entry when the group does not exist yet)."""
    from relay.usage import USAGE_GROUP

    group = next((g for g in redis.xinfo_groups(stream) if _text(g["name"]) == USAGE_GROUP), None) \
        if redis.exists(stream) else None
    if group is None:
        first = redis.xrange(stream, "-", "+", count=1)
        return int(redis.xlen(stream)), _entry_time(first[0][0]) if first else None
    oldest: list[float] = []
    pending = redis.xpending(stream, USAGE_GROUP)
    if pending["pending"]:
        oldest.append(_entry_time(pending["min"]))
    undelivered = redis.xrange(stream, "(" + _text(group["last-delivered-id"]), "+", count=1)
    if undelivered:
        oldest.append(_entry_time(undelivered[0][0]))
    lag = group.get("lag")
    if lag is None:  # Redis cannot tell the lag after deletions: count what follows, up to a bound
        lag = len(redis.xrange(stream, "(" + _text(group["last-delivered-id"]), "+", count=10_000))
    return int(pending["pending"]) + int(lag), min(oldest) if oldest else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
