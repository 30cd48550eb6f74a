"""The relay's operator endpoints and its shutdown, on real `switchboard relay` processes (several
sharing one port), real Redis and a fake upstream: one scrape sums every process's metrics, /metrics
is closed to strangers, /readyz says what is wrong, and SIGTERM drains — streams in flight finish
and are charged, new connections are refused, every process exits 0."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import replace

import orjson
import pytest
import redis as redis_lib
import requests
from prometheus_client.parser import text_string_to_metric_families

from relay.config_store import SNAPSHOT_KEY, VERSION_KEY
from relay.settings import Timeouts
from tests import factories
from tests.fakes.openai_server import Behaviour
from tests.gateway import free_port
from tests.relay_harness import Relay, assert_money_consistent, events_of, ingest
from tests.relay_process import RelayProcess

SMALL_CHAT = 111  # the fake's default usage (12 in, 5 out) at $3 / $15 per 1M tokens, in µ$
FUNDS = 10_000_000
TOKEN = "metrics-secret"


@pytest.fixture
def world(app, upstream):
    upstream.reset_log()
    upstream.default = Behaviour()
    factories.price("gpt-4o-mini", input="3", output="15")
    user = factories.funded_user("10")
    _, secret = factories.api_key(user)
    channel = factories.channel(upstream.url, keys_=("sk-up-1",))
    relay = Relay(app, timeouts=Timeouts(connect=1.0, first_byte=5.0, idle=5.0, total=60.0))
    relay.app.holder.refresh()
    return relay, secret, channel.id, user.account_id


def chat(url: str, key: str, stream: bool = False, **kwargs):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return requests.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                         timeout=60, stream=stream, **kwargs)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    reply = requests.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(reply.text) for s in family.samples}


def named(name: str, **labels: str) -> tuple[str, tuple]:
    return name, tuple(sorted(labels.items()))


def until(check, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_one_scrape_sums_every_process_and_strangers_get_404(world):
    relay, key, channel_id, _ = world
    with RelayProcess(relay.settings, workers=3, SWITCHBOARD_METRICS_TOKEN=TOKEN) as proc:
        folder = relay.settings.instance_dir / "metrics" / f"relay-{proc.port}"

        def writers() -> set[str]:
            return {name.split("_")[-1] for name in os.listdir(folder) if name.startswith("counter_")}

        # a new connection each: the kernel spreads them over the processes, though not evenly, so
        # send until every process has answered at least once
        sent = 0
        while sent < 120 and (sent < 12 or not until(lambda: len(writers()) == 3, 1.0)):
            for _ in range(12):
                assert chat(proc.url, key).status_code == 200
            sent += 12
        assert len(writers()) == 3  # every process writes its own figures
        route = {"channel": str(channel_id), "model": "gpt-4o-mini"}
        requests_total = named("switchboard_relay_requests_total", status="200", **route)
        # each process writes its figures within a second; the scrape reads all of them
        metrics = until(lambda: (m := scrape(proc.url)).get(requests_total) == sent and m)
        assert metrics, scrape(proc.url).get(requests_total)
        assert metrics[named("switchboard_relay_cost_micro_usd_total", **route)] == sent * SMALL_CHAT
        assert metrics[named("switchboard_relay_tokens_total", kind="input", **route)] == sent * 12
        assert metrics[named("switchboard_relay_request_duration_seconds_count", **route)] == sent
        assert metrics[("switchboard_relay_snapshot_version", ())] == relay.app.holder.current.version
        assert metrics[("switchboard_holds_open", ())] == 0 and metrics[("switchboard_relay_redis_up", ())] == 1
        assert metrics[("switchboard_relay_redis_round_trips_total", ())] > 0
        # without the token: nothing there (and a wrong token is no better)
        assert requests.get(proc.url + "/metrics", timeout=5).status_code == 404
        assert requests.get(proc.url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 404


def test_metrics_without_a_token_answer_loopback_only(world):
    relay, _, _, _ = world
    with RelayProcess(relay.settings) as proc:
        assert requests.get(proc.url + "/metrics", timeout=5).status_code == 200
    with RelayProcess(relay.settings, SWITCHBOARD_METRICS_NETWORKS="10.0.0.0/8") as proc:
        assert requests.get(proc.url + "/metrics", timeout=5).status_code == 404


def test_readyz_names_a_stale_snapshot_and_healthz_stays_up(world):
    relay, _, _, _ = world
    with RelayProcess(relay.settings) as proc:
        ready = requests.get(proc.url + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"redis": "ok", "snapshot": "ok", "accepting": "ok"}}
    with RelayProcess(relay.settings, SWITCHBOARD_READY_SNAPSHOT_MAX_AGE="0") as proc:
        ready = requests.get(proc.url + "/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["snapshot"] and ready.json()["checks"]["snapshot"].startswith("stale")
        assert requests.get(proc.url + "/healthz", timeout=5).status_code == 200


@pytest.fixture
def lone_redis(world, tmp_path):
    """A Redis of the test's own, holding the published snapshot, that the test can stop."""
    relay = world[0]
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        own = redis_lib.Redis(port=port)
        assert until(lambda: _pings(own))
        for name in (VERSION_KEY, SNAPSHOT_KEY):
            own.restore(name, 0, relay.redis.dump(name))
        yield replace(relay.settings, redis_url=f"redis://127.0.0.1:{port}/0"), server
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(5)


def test_readyz_is_503_naming_redis_when_redis_is_gone(lone_redis):
    settings, server = lone_redis
    with RelayProcess(settings) as proc:
        assert requests.get(proc.url + "/readyz", timeout=5).status_code == 200
        server.terminate()
        server.wait(10)
        ready = requests.get(proc.url + "/readyz", timeout=15)
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["redis"] and ready.json()["checks"]["redis"].startswith("unreachable")


def test_json_logs_name_the_request_they_were_written_for(lone_redis):
    settings, server = lone_redis
    proc = RelayProcess(settings, workers=2, SWITCHBOARD_LOG_FORMAT="json")
    try:
        server.terminate()
        server.wait(10)
        reply = chat(proc.url, "sk-sb-anything")  # Redis is gone: refused, and the relay says why in its log
        assert reply.status_code == 503
    finally:
        proc.stop()
    request_id = reply.headers["X-Request-Id"]
    lines = [orjson.loads(line) for line in proc.stderr_text.splitlines() if line.startswith("{")]
    mine = [entry for entry in lines if entry.get("request_id") == request_id]
    # the record does not name the request in its message; it carries its id all the same, traceback included
    assert [(entry["logger"], entry["level"], entry["message"]) for entry in mine] == [("relay.key_cache", "ERROR", "key record read failed")]
    assert "ConnectionError" in mine[0]["exception"]
    assert any(entry["logger"] == "relay.config_store" and "request_id" not in entry for entry in lines)  # background work: no request
    assert all(isinstance(entry["pid"], int) for entry in lines)


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        return False


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):  # reset: it reached the backlog of a listener that then closed
        return True


def test_sigterm_drains_streams_in_flight_refuses_new_connections_and_exits_0(world, upstream):
    relay, key, _, account_id = world
    words = 50
    # ~10 s a stream: still running when a loaded machine notices the refusal
    upstream.default = Behaviour(content=" ".join(f"w{i}" for i in range(words)), chunk_gap=0.2)
    proc = RelayProcess(relay.settings, workers=2, SWITCHBOARD_DRAIN_SECONDS="60")
    replies: list = [None] * 4
    started = threading.Barrier(len(replies) + 1)

    def stream(i: int) -> None:
        reply = chat(proc.url, key, stream=True)
        chunks = reply.iter_content(chunk_size=None)
        first = next(chunks)  # in flight: the first event is here
        started.wait(30)
        replies[i] = (reply.status_code, first + b"".join(chunks))

    idle = requests.Session()  # a keep-alive connection with nothing in flight: closed at once, it holds nothing up
    try:
        assert idle.get(proc.url + "/healthz", timeout=5).status_code == 200
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(replies))]
        for t in threads:
            t.start()
        started.wait(30)
        # the whole process group, as systemd and `docker stop` do (each process also hears it from its parent)
        os.killpg(proc.proc.pid, signal.SIGTERM)
        assert until(lambda: refused(proc.port)), "new connections are still accepted"
        assert any(t.is_alive() for t in threads), "the streams ended before the relay stopped accepting"
        for t in threads:
            t.join(60)
        code = proc.proc.wait(60)
        if code != 0:
            proc.stop()
        assert code == 0, proc.stderr_text[-4000:]
    finally:
        proc.stop()
        idle.close()
    assert "cutting" not in proc.stderr_text  # nothing waited for the deadline
    charged = 0
    for status, body in replies:
        events = events_of(body)
        assert status == 200 and events[-1] == "[DONE]"
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if isinstance(e, dict) and e["choices"]).split() == \
            [f"w{i}" for i in range(words)]
        charged += events[-2]["usage"]["cost_micro_usd"]
    assert charged > 0
    from controlplane import ledger

    ingest()
    assert ledger.stored_balance(account_id) == FUNDS - charged
    assert_money_consistent(relay.redis)


def test_a_stream_past_the_drain_deadline_is_cut_and_charged_for_what_it_delivered(world, upstream):
    relay, key, _, account_id = world
    upstream.default = Behaviour(content=" ".join(f"w{i}" for i in range(200)), chunk_gap=0.1)  # ~20 s
    proc = RelayProcess(relay.settings, SWITCHBOARD_DRAIN_SECONDS="1")
    got: list[bytes] = []
    try:
        reply = chat(proc.url, key, stream=True)
        chunks = reply.iter_content(chunk_size=None)
        got.append(next(chunks))
        proc.proc.send_signal(signal.SIGTERM)
        try:
            for chunk in chunks:
                got.append(chunk)
        except requests.RequestException:
            pass  # cut mid-body
        assert proc.proc.wait(30) == 0
    finally:
        proc.stop()
    assert events_of(b"".join(got))[-1] != "[DONE]"
    assert "cutting 1 connection(s)" in proc.stderr_text
    from controlplane import ledger

    ingest()
    # input and what was delivered: less than the whole answer would have cost
    assert 0 < FUNDS - ledger.stored_balance(account_id) < 12 * 3 + 200 * 15
    assert_money_consistent(relay.redis)
