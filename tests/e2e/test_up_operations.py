"""`switchboard up` (relay and console in one process): its /metrics carries the relay's request
metrics with the control plane's state, its /readyz the relay's checks with SQL and Redis, and
SIGTERM lets a stream in flight finish before the process exits 0."""
from __future__ import annotations

import signal
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_server import Behaviour
from tests.gateway import Gateway
from tests.relay_harness import events_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def up(tmp_path_factory, fake_openai):
    gateway = Gateway(tmp_path_factory.mktemp("up-operations"))
    try:
        gateway.cli("channel", "add", "--name", "fake", "--type", "openai", "--base-url", fake_openai.url, "--keys", "sk-up", "--models", "gpt-4o-mini")
        gateway.cli("price", "set", "gpt-4o-mini", "--input", "3", "--output", "15", "--now")
        gateway.cli("user", "create", "--email", "ops@example.com")
        gateway.cli("topup", "--user", "ops@example.com", "--usd", "5", "--reason", "e2e funds")
        key = gateway.cli("key", "create", "--user", "ops@example.com")["key"]
        yield gateway, key
    finally:
        gateway.stop()


def chat(gateway: Gateway, key: str, **extra):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], **extra}
    return requests.post(gateway.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60,
                         stream=bool(extra.get("stream")))


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_and_readiness_of_the_one_process(up, fake_openai):
    gateway, key = up
    fake_openai.default = Behaviour()
    assert chat(gateway, key).status_code == 200
    metrics = samples(requests.get(gateway.url + "/metrics", timeout=10).text)
    ok = [v for (name, labels), v in metrics.items()
          if name == "switchboard_relay_requests_total" and ("model", "gpt-4o-mini") in labels and ("status", "200") in labels]
    assert ok == [1.0]
    assert metrics[("switchboard_channels", (("status", "enabled"),))] == 1
    ready = requests.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "relay_snapshot": "ok", "relay_accepting": "ok"}


def test_sigterm_lets_the_stream_in_flight_finish_then_exits_0(up, fake_openai):
    gateway, key = up
    fake_openai.default = Behaviour(content=" ".join(f"w{i}" for i in range(20)), chunk_gap=0.2)
    box: dict = {}
    started = threading.Event()

    def stream() -> None:
        reply = chat(gateway, key, stream=True, stream_options={"include_usage": True})
        chunks = reply.iter_content(chunk_size=None)
        first = next(chunks)
        started.set()
        box["body"] = first + b"".join(chunks)

    thread = threading.Thread(target=stream)
    thread.start()
    assert started.wait(30)
    gateway.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    deadline = time.monotonic() + 60
    while gateway.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gateway.proc.returncode == 0, "\n".join(gateway.output[-30:])
    events = events_of(box["body"])
    assert events[-1] == "[DONE]" and events[-2]["usage"]["cost_micro_usd"] > 0
