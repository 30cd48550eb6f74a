"""Routing, limits and health across real processes: `switchboard up` plus a second `switchboard relay`
on the same Redis, the official openai SDK and raw sockets as callers, fake upstreams behind — and
the ledger invariants after all of it."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest
from sqlalchemy import select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import Channel, ChannelKey, RequestLog
from controlplane.runtime import runtime
from controlplane.services import groups
from controlplane.services import limits as limit_service
from relay import pricing, tokens
from tests import factories
from tests.e2e.gateway_state import SecondRelay, inspecting, state_app, wait_for_snapshot
from tests.fakes.openai_server import Behaviour, FakeOpenAI, invalid_key
from tests.gateway import ROOT, Gateway
from tests.relay_harness import assert_money_consistent

pytestmark = pytest.mark.e2e

ENV = {
    "SWITCHBOARD_UPSTREAM_FIRST_BYTE_TIMEOUT": "5",
    "SWITCHBOARD_UPSTREAM_IDLE_TIMEOUT": "3",
    "SWITCHBOARD_UPSTREAM_TOTAL_TIMEOUT": "20",
    "SWITCHBOARD_PROBE_EVERY_SECONDS": "0",  # no scheduled probes eating the fakes' scripted answers
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("routing-gateway"), ENV)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def second(gateway):
    relay = SecondRelay(gateway)
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def inspector(gateway):
    return state_app(gateway)


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fresh_fake(fake):
    fake.reset_log()


def setup_model(inspector, fake, model: str, keys=("sk-up",)) -> int:
    """A model of its own on a channel of its own, so tests in one gateway never share counters.
    Made through the service layer on the gateway's own database and Redis, as the CLI would."""
    with inspecting(inspector):
        factories.price(model, input="3", output="15")
        return factories.channel(fake.url, models=(model,), keys_=keys, name=model).id


def customer(inspector) -> tuple[int, str, int]:
    """(account id, API key, key id) of a new user with $5."""
    with inspecting(inspector):
        user = factories.funded_user("5")
        row, secret = factories.api_key(user)
        return user.account_id, secret, row.id


def set_limits(inspector, row_type, row_id: int, **limits) -> None:
    with inspecting(inspector):
        limit_service.set_limits(factories.ACTOR, db.session.get(row_type, row_id), **limits)


def wait_for_balance(inspector, account_id: int, expected: int, timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while True:
        with inspecting(inspector):
            seen = ledger.stored_balance(account_id)
        if seen == expected:
            return
        assert time.time() < deadline, f"balance {seen}, expected {expected}"
        time.sleep(0.2)


def sdk(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


def synced(inspector, *relays) -> None:
    """Until every relay serves the configuration just written (a new key would otherwise be a 401)."""
    with inspector.app_context():
        wait_for_snapshot(runtime().redis, *(relay.url for relay in relays))


def test_a_keys_requests_per_minute_hold_across_two_relay_processes(gateway, second, inspector, fake):
    setup_model(inspector, fake, "rl-model")
    _, key, key_id = customer(inspector)
    gateway.cli("limits", "set", "--key", str(key_id), "--rpm", "4")  # the CLI, once
    synced(inspector, gateway, second)
    outcomes = []
    for i in range(6):
        client = sdk(gateway.base_url if i % 2 == 0 else second.base_url, key)
        try:
            client.chat.completions.create(model="rl-model", messages=[{"role": "user", "content": "hi"}])
            outcomes.append("ok")
        except openai.RateLimitError as refused:
            assert refused.code == "rate_limit_rpm" and int(refused.response.headers["retry-after"]) >= 1
            outcomes.append("429")
    assert outcomes.count("ok") == 4 and outcomes.count("429") == 2
    assert len(fake.chat_requests()) == 4


def test_a_channels_capacity_holds_across_two_relay_processes(gateway, second, inspector, fake):
    with inspecting(inspector):
        factories.group_queue(0)  # no capacity queue: what is over capacity is a 429 at once
    channel_id = setup_model(inspector, fake, "cap-model")
    set_limits(inspector, Channel, channel_id, concurrency=2)
    _, key, _ = customer(inspector)
    synced(inspector, gateway, second)
    fake.default = Behaviour(first_byte_delay=1.5)
    outcomes: list[str] = []
    barrier = threading.Barrier(5)

    def call(i):
        barrier.wait()
        try:
            sdk(gateway.base_url if i % 2 == 0 else second.base_url, key).chat.completions.create(
                model="cap-model", messages=[{"role": "user", "content": "hi"}])
            outcomes.append("ok")
        except openai.RateLimitError as refused:
            outcomes.append(refused.code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "ok", "upstream_capacity_reached", "upstream_capacity_reached", "upstream_capacity_reached"]
    assert fake.max_in_flight == 2


def test_the_capacity_queue_serves_two_keys_in_turn_across_two_relay_processes(gateway, second, inspector, fake):
    with inspecting(inspector):
        groups.create_group(factories.ACTOR, "waiters", queue_seconds=30)
        keys = [factories.api_key(factories.funded_user("5", group="waiters"))[1] for _ in range(2)]
    channel_id = setup_model(inspector, fake, "queue-model")
    set_limits(inspector, Channel, channel_id, concurrency=2)
    synced(inspector, gateway, second)
    # The two requests that find the slots free hold them (within the 5 s first-byte timeout) long
    # enough for every other request to be waiting, however slowly this machine starts the callers'
    # threads: the order is then the queue's alone.
    fake.push(Behaviour(first_byte_delay=3.0), Behaviour(first_byte_delay=3.0))
    fake.default = Behaviour(first_byte_delay=0.3)
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def call(i):
        who = "AB"[i // 10]
        barrier.wait()
        try:
            sdk(gateway.base_url if i % 2 == 0 else second.base_url, keys[i // 10]).chat.completions.create(
                model="queue-model", messages=[{"role": "user", "content": f"{who}: {i}"}])
            outcomes.append("ok")
        except openai.APIError as refused:
            outcomes.append(str(refused))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes == ["ok"] * 20
    assert fake.max_in_flight == 2
    order = [r["body"]["messages"][0]["content"][0] for r in fake.chat_requests()]
    queued = order[2:]  # the first two found free slots; the rest were served from the queue
    for n in range(1, 19):  # in turn: neither key is ever more than two ahead of the other
        assert abs(queued[:n].count("A") - queued[:n].count("B")) <= 2, order
    deadline = time.time() + 20
    while True:  # the gateway's usage consumer writes the request logs
        with inspecting(inspector):
            logs = db.session.scalars(select(RequestLog).where(RequestLog.model == "queue-model")).all()
            db.session.expunge_all()
        if len(logs) == 20 or time.time() > deadline:
            break
        time.sleep(0.2)
    waits = [s for log in logs for s in (log.trace or []) if s.get("step") == "queue"]
    assert len(logs) == 20 and len(waits) >= 16
    assert all(w["result"] == "served" and w["waited_ms"] <= 30_000 for w in waits)


def test_a_conversation_stays_on_one_upstream_key_across_two_relay_processes(gateway, second, inspector, fake):
    keys = ("sk-conv-1", "sk-conv-2", "sk-conv-3", "sk-conv-4")
    with inspecting(inspector):
        factories.price("conv-model", input="3", output="15")
        factories.channel(fake.url, models=("conv-model",), keys_=keys, name="conv-model", config={"key_selection": "random"})
    _, key, _ = customer(inspector)
    synced(inspector, gateway, second)
    talks = {n: [{"role": "system", "content": "You plan trips."}, {"role": "user", "content": f"Trip {n}: where first?"}] for n in range(3)}
    for turn in range(6):
        for n, messages in talks.items():
            base = gateway.base_url if (turn + n) % 2 == 0 else second.base_url  # every turn on the other relay
            reply = sdk(base, key).chat.completions.create(model="conv-model", messages=messages)
            messages += [{"role": "assistant", "content": reply.choices[0].message.content}, {"role": "user", "content": f"Day {turn + 2}?"}]
    used = {}
    for request in fake.chat_requests():
        opening = request["body"]["messages"][1]["content"]
        used.setdefault(opening, set()).add(request["headers"]["Authorization"])
    assert len(used) == 3 and all(len(upstream_keys) == 1 for upstream_keys in used.values())


def read_events(sock: socket.socket, wanted: int) -> bytes:
    """Read until `wanted` SSE events arrived (through the chunked framing), then stop reading."""
    sock.settimeout(10)
    data = b""
    while data.count(b"data: ") < wanted:
        chunk = sock.recv(4096)
        assert chunk, "the relay closed the stream early"
        data += chunk
    return data


def test_a_caller_that_hangs_up_mid_stream_is_charged_input_and_what_it_was_sent_once(gateway, inspector, fake):
    setup_model(inspector, fake, "hangup-model")
    account_id, key, _ = customer(inspector)
    synced(inspector, gateway)
    words = " ".join(f"w{i}" for i in range(40))
    fake.push(Behaviour(content=words, chunk_gap=0.05))
    body = json.dumps({"model": "hangup-model", "stream": True, "messages": [{"role": "user", "content": "Say hello"}]}).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    seen = read_events(sock, 4)
    sock.close()
    deadline = time.time() + 5
    while not fake.gone() and time.time() < deadline:
        time.sleep(0.05)
    assert fake.gone(), "the relay kept reading from the upstream after the caller left"
    with inspecting(inspector):
        deadline = time.time() + 10
        while (log := db.session.scalar(select(RequestLog).where(RequestLog.model == "hangup-model"))) is None and time.time() < deadline:
            time.sleep(0.2)
            db.session.rollback()
        assert (log.status, log.error_code) == (499, "client_disconnected")
        received = seen.count(b'"content":"')
        assert received - 1 <= log.output_tokens < 40  # at least what the caller read, never the whole answer
        prompt = tokens.prompt_tokens([{"role": "user", "content": "Say hello"}], None)
        assert log.cost == pricing.cost(pricing.Usage(input=prompt, output=log.output_tokens), pricing.Price("m", 3_000_000, 15_000_000), 10_000)
        charged = log.cost
    wait_for_balance(inspector, account_id, 5_000_000 - charged)


def test_an_upstream_dying_mid_stream_ends_the_sdks_stream_with_an_error(gateway, inspector, fake):
    setup_model(inspector, fake, "midstream-model")
    account_id, key, _ = customer(inspector)
    synced(inspector, gateway)
    fake.push(Behaviour(content="alpha beta gamma delta", reset_after_chunks=3))
    received = []
    with pytest.raises(openai.APIError) as failure:
        for chunk in sdk(gateway.base_url, key).chat.completions.create(
                model="midstream-model", messages=[{"role": "user", "content": "Say hello"}], stream=True):
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert received == ["", "alpha", " beta"]
    assert "failed mid-way" in failure.value.message and "request id: req_" in failure.value.message
    assert len(fake.chat_requests()) == 1  # never retried once bytes went out
    prompt = tokens.prompt_tokens([{"role": "user", "content": "Say hello"}], None)
    charged = pricing.cost(pricing.Usage(input=prompt, output=tokens.text_tokens("alpha") + tokens.text_tokens(" beta")),
                           pricing.Price("m", 3_000_000, 15_000_000), 10_000)
    wait_for_balance(inspector, account_id, 5_000_000 - charged)


def test_a_dead_key_is_disabled_by_the_running_worker(gateway, inspector, fake):
    channel_id = setup_model(inspector, fake, "deadkey-model", keys=("sk-dead", "sk-alive"))
    _, key, _ = customer(inspector)
    synced(inspector, gateway)
    fake.by_key["sk-dead"] = invalid_key()
    assert sdk(gateway.base_url, key).chat.completions.create(model="deadkey-model", messages=[{"role": "user", "content": "hi"}])
    assert fake.keys_seen() == ["sk-dead", "sk-alive"]
    deadline = time.time() + 15
    with inspecting(inspector):
        while time.time() < deadline:
            row = db.session.scalar(select(ChannelKey).where(ChannelKey.channel_id == channel_id, ChannelKey.last4 == "dead"))
            if row.status == "auto_disabled":
                break
            db.session.rollback()
            time.sleep(0.2)
        assert row.status == "auto_disabled" and "Incorrect API key provided" in row.status_reason
    for _ in range(3):
        sdk(gateway.base_url, key).chat.completions.create(model="deadkey-model", messages=[{"role": "user", "content": "hi"}])
    assert fake.keys_seen().count("sk-dead") == 1


def test_a_key_that_only_answers_5xx_is_disabled_by_probes_and_routed_around(gateway, inspector, fake):
    channel_id = setup_model(inspector, fake, "flakykey-model", keys=("sk-5xx", "sk-fine"))
    _, key, _ = customer(inspector)
    synced(inspector, gateway)
    fake.by_key["sk-5xx"] = Behaviour(status=502)
    for _ in range(3):  # SWITCHBOARD_PROBE_DISABLE_AFTER
        run = subprocess.run([sys.executable, "-m", "scripts.health_check", "--channel", str(channel_id), "--json"], cwd=ROOT,
                             env=gateway.env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 3 and json.loads(run.stdout)["failing"] == [channel_id], run.stderr
    assert fake.keys_seen() == ["sk-5xx", "sk-fine"] * 3  # both keys, every run
    with inspecting(inspector):
        keys = {k.last4: k.status for k in db.session.scalars(select(ChannelKey).where(ChannelKey.channel_id == channel_id))}
        assert keys == {"-5xx": "auto_disabled", "fine": "enabled"}
        assert db.session.get(Channel, channel_id).status == "enabled"
    synced(inspector, gateway)
    fake.reset_log()
    fake.by_key["sk-5xx"] = Behaviour(status=502)
    for _ in range(4):
        sdk(gateway.base_url, key).chat.completions.create(model="flakykey-model", messages=[{"role": "user", "content": "hi"}])
    assert fake.keys_seen() == ["sk-fine"] * 4


def test_after_all_of_it_no_charge_is_doubled_or_lost(gateway, inspector):
    """Runs last in this module: every request above settled once, SQL and Redis agree."""
    with inspecting(inspector):
        deadline = time.time() + 15
        while runtime().redis.xlen("sb:usage") and time.time() < deadline:
            time.sleep(0.2)
        assert_money_consistent(runtime().redis)
