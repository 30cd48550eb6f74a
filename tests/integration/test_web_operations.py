"""The control plane's operator endpoints on each SQL back end and a real Redis: /healthz (the process),
/readyz (SQL and Redis, 503 naming what failed), /metrics (state read when scraped, loopback only
without a token) and the request id on every answer."""
from __future__ import annotations

import time

import redis as redis_lib
from prometheus_client.parser import text_string_to_metric_families

from controlplane.dead_letters import DEAD_STREAM
from controlplane.models import ChannelStatus
from controlplane.runtime import runtime
from controlplane.services import channels
from relay.redis_keys import HOLDS_INDEXES
from relay.usage import USAGE_GROUP, USAGE_STREAMS
from tests import factories
from tests.gateway import free_port
from workers.usage import ensure_group


def metrics_of(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_healthz_is_the_process_and_readyz_its_dependencies(sql_app, monkeypatch):
    client = sql_app.test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    # Redis gone (a client of a port nothing listens on): not ready, saying so; still alive
    monkeypatch.setattr(runtime(), "redis", redis_lib.Redis(port=free_port(), socket_connect_timeout=1))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["failed"] == ["redis"]
    assert ready.json["checks"]["database"] == "ok" and ready.json["checks"]["redis"].startswith("unreachable")
    assert client.get("/healthz").status_code == 200


def test_metrics_read_channel_states_ingestion_backlog_dead_letters_and_holds(sql_app, redis_client):
    first = factories.channel("http://127.0.0.1:9/v1", keys_=("sk-1", "sk-2"))
    second = factories.channel("http://127.0.0.1:9/v1", keys_=("sk-3",))
    channels.set_status(factories.ACTOR, second, ChannelStatus.DISABLED, "test")
    now = time.time()
    redis_client.hset(f"sb:hc:{first.id}", "u", now + 60)  # ejected for another minute
    redis_client.hset(f"sb:hk:{first.keys[0].id}", "u", now - 60)  # was, no longer
    # three usage events: one delivered to ingestion and not acknowledged (a minute old), two not yet delivered
    ensure_group(redis_client)
    minute_ago = int((now - 60) * 1000)
    redis_client.xadd(USAGE_STREAMS[0], {"e": b"{}"}, id=f"{minute_ago}-0")
    redis_client.xreadgroup(USAGE_GROUP, "test", {USAGE_STREAMS[0]: ">"}, count=1)
    redis_client.xadd(USAGE_STREAMS[0], {"e": b"{}"}, id=f"{minute_ago + 1}-0")
    redis_client.xadd(USAGE_STREAMS[0], {"e": b"{}"})
    redis_client.xadd(DEAD_STREAM, {"e": b"{}", "error": "refused"})
    redis_client.zadd(HOLDS_INDEXES[0], {"req_a": now + 900, "req_b": now + 900})

    reply = sql_app.test_client().get("/metrics")
    assert reply.status_code == 200 and reply.content_type.startswith("text/plain")
    metrics = metrics_of(reply.text)
    assert metrics[("switchboard_channels", (("status", "enabled"),))] == 1
    assert metrics[("switchboard_channels", (("status", "disabled"),))] == 1
    assert metrics[("switchboard_channel_keys", (("status", "enabled"),))] == 3
    assert metrics[("switchboard_channels_ejected", ())] == 1 and metrics[("switchboard_channel_keys_ejected", ())] == 0
    assert metrics[("switchboard_usage_backlog_events", ())] == 3
    assert 60 <= metrics[("switchboard_usage_backlog_age_seconds", ())] < 3600
    assert metrics[("switchboard_dead_letters", ())] == 1 and metrics[("switchboard_holds_open", ())] == 2
    assert metrics[("switchboard_up", (("dependency", "database"),))] == 1 and metrics[("switchboard_up", (("dependency", "redis"),))] == 1

    # once ingestion has caught up, nothing waits
    for entry_id, _ in redis_client.xrange(USAGE_STREAMS[0]):
        redis_client.xack(USAGE_STREAMS[0], USAGE_GROUP, entry_id)
    redis_client.xreadgroup(USAGE_GROUP, "test", {USAGE_STREAMS[0]: ">"})
    redis_client.xack(USAGE_STREAMS[0], USAGE_GROUP, *(entry_id for entry_id, _ in redis_client.xrange(USAGE_STREAMS[0])))
    metrics = metrics_of(sql_app.test_client().get("/metrics").text)
    assert metrics[("switchboard_usage_backlog_events", ())] == 0 and metrics[("switchboard_usage_backlog_age_seconds", ())] == 0


def test_metrics_answer_loopback_only_without_a_token(sql_app):
    client = sql_app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 404


def test_every_answer_names_its_request(sql_app):
    client = sql_app.test_client()
    own = client.get("/login").headers["X-Request-Id"]
    assert own.startswith("web_") and len(own) == 28
    assert client.get("/healthz", headers={"X-Request-Id": "edge-7f3a:1"}).headers["X-Request-Id"] == "edge-7f3a:1"
    replaced = client.get("/healthz", headers={"X-Request-Id": "x" * 65}).headers["X-Request-Id"]
    assert replaced.startswith("web_")
