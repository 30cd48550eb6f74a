"""Idempotent retries through the real relay on a real socket (its own HTTP server), real Redis and a
fake upstream that counts its calls: replays, concurrent duplicates, a reused key, expiry, a relay
restart, what is recorded and what is released — and that each answer is charged once."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
import requests

from relay.idempotency import claim_of
from relay.settings import Timeouts
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.relay_harness import Relay, assert_money_consistent, events_of, ingest
from tests.relay_process import RelayProcess

SMALL_CHAT = 111  # the fake's default usage (12 in, 5 out) at $3 / $15 per 1M tokens, in µ$
FUNDS = 10_000_000
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


@dataclass
class World:
    app: object
    relay: Relay
    url: str
    key: str
    key_id: int
    account_id: int
    upstream: FakeOpenAI

    def post(self, body: dict | None = None, idem: str | None = "retry-1", key: str | None = None, path: str = "/v1/chat/completions",
             url: str | None = None):
        headers = {"Authorization": f"Bearer {key or self.key}"}
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return requests.post((url or self.url) + path, json=body or BODY, headers=headers, timeout=15)

    def calls(self) -> int:
        return len(self.upstream.chat_requests())

    def balance(self) -> int:
        from controlplane import ledger

        ingest()
        return ledger.stored_balance(self.account_id)


def relay_for(app, **overrides) -> Relay:
    return Relay(app, timeouts=Timeouts(connect=1.0, first_byte=5.0, idle=2.0, total=8.0), **overrides)


@pytest.fixture
def world(app, upstream, request):
    upstream.reset_log()
    upstream.default = Behaviour()
    factories.price("gpt-4o-mini", input="3", output="15")
    user = factories.funded_user("10")
    row, secret = factories.api_key(user)
    factories.channel(upstream.url, keys_=("sk-up-1",))
    relay = relay_for(app, **getattr(request, "param", {}))
    with relay.served() as (host, port):
        yield World(app, relay, f"http://{host}:{port}", secret, row.id, user.account_id, upstream)


def test_a_retried_answer_is_replayed_and_charged_once(world):
    first = world.post()
    again = world.post()
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.json()["usage"]["cost_micro_usd"] == SMALL_CHAT
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    # The replay names the request that was charged, and carries its charge.
    assert again.headers["X-Request-Id"] == first.headers["X-Request-Id"]
    assert again.headers["x-switchboard-cost-micro-usd"] == first.headers["x-switchboard-cost-micro-usd"] == str(SMALL_CHAT)
    assert world.calls() == 1
    assert world.balance() == FUNDS - SMALL_CHAT
    assert_money_consistent(world.relay.redis)


def test_a_retried_stream_replays_every_byte_it_delivered(world):
    body = dict(BODY, stream=True, stream_options={"include_usage": True})
    world.upstream.push(Behaviour(content="one two three"))
    first = world.post(body)
    again = world.post(body)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and events_of(again.content)[-1] == "[DONE]"
    assert again.headers["content-type"].startswith("text/event-stream")
    assert world.calls() == 1
    usage = events_of(first.content)[-2]["usage"]
    assert world.balance() == FUNDS - usage["cost_micro_usd"]
    assert_money_consistent(world.relay.redis)


def test_twenty_concurrent_duplicates_make_one_upstream_call_and_one_charge(world):
    """A real relay process: the twenty are in flight together (the in-process server takes them in turn)."""
    world.upstream.push(Behaviour(first_byte_delay=1.0))
    replies: list = [None] * 20
    with RelayProcess(world.relay.settings) as relay:
        def send(i: int) -> None:
            replies[i] = world.post(url=relay.url)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        winner = next(r for r in replies if r.status_code == 200)
        # Once the first has finished, the same retry gets its answer.
        assert world.post(url=relay.url).content == winner.content
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [409] * 19
    refused = [r.json()["error"] for r in replies if r.status_code == 409]
    assert {e["code"] for e in refused} == {"idempotency_in_progress"} and all(r.headers["Retry-After"] == "1" for r in replies if r.status_code == 409)
    assert world.calls() == 1 and world.balance() == FUNDS - SMALL_CHAT
    assert_money_consistent(world.relay.redis)


def test_the_in_progress_mark_lasts_no_longer_than_the_request_may(world):
    world.upstream.push(Behaviour(first_byte_delay=1.0))
    claim = claim_of({"HTTP_IDEMPOTENCY_KEY": "retry-1", "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions"},
                     world.account_id, world.key_id, b"", world.relay.settings.lease_seconds)
    thread = threading.Thread(target=world.post)
    thread.start()
    while not world.relay.redis.exists(claim.redis_key):
        time.sleep(0.01)
    assert world.relay.redis.hget(claim.redis_key, "state") == b"running"
    assert 0 < world.relay.redis.ttl(claim.redis_key) <= world.relay.settings.lease_seconds + 1
    thread.join(10)
    assert world.relay.redis.hget(claim.redis_key, "state") == b"done"
    assert world.relay.settings.lease_seconds + 1 < world.relay.redis.ttl(claim.redis_key) <= 86_400


def test_the_same_key_with_another_body_is_refused_without_a_call(world):
    assert world.post().status_code == 200
    other = world.post(dict(BODY, messages=[{"role": "user", "content": "Something else"}]))
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    elsewhere = world.post({"model": "gpt-4o-mini", "input": "Say hello"}, path="/v1/embeddings")
    assert elsewhere.status_code == 409 and elsewhere.json()["error"]["code"] == "idempotency_key_reused"
    assert world.calls() == 1 and world.balance() == FUNDS - SMALL_CHAT


def test_keys_are_scoped_to_the_api_key(world):
    user = factories.funded_user("10")
    _, other_key = factories.api_key(user)
    world.relay.app.holder.refresh()
    assert world.post().status_code == 200
    theirs = world.post(key=other_key)
    assert theirs.status_code == 200 and "Idempotent-Replayed" not in theirs.headers
    assert world.calls() == 2


def test_a_malformed_key_is_a_400_before_anything_else(world):
    for bad in ("x" * 256, "tab\there", "ключ"):
        reply = requests.post(world.url + "/v1/chat/completions", json=BODY, timeout=10,
                              headers={"Authorization": f"Bearer {world.key}", "Idempotency-Key": bad.encode().decode("latin-1")})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_idempotency_key"
    assert world.post(idem="x" * 255).status_code == 200
    assert world.calls() == 1


def test_a_server_failure_is_released_so_the_retry_runs(world):
    world.upstream.push(Behaviour(status=500))
    failed = world.post()
    assert failed.status_code == 502 and world.calls() == 1
    retried = world.post()
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert world.calls() == 2 and world.balance() == FUNDS - SMALL_CHAT


def test_the_upstreams_refusal_of_the_request_is_kept(world):
    world.upstream.push(Behaviour(status=400, error={"error": {"message": "bad stop sequence", "type": "invalid_request_error",
                                                               "code": None}}))
    refused = world.post()
    again = world.post()
    assert refused.status_code == again.status_code == 400
    assert again.json() == refused.json() and again.headers["Idempotent-Replayed"] == "true"
    assert world.calls() == 1 and world.balance() == FUNDS


@pytest.mark.parametrize("world", [{"idempotency_ttl_seconds": 1}], indirect=True)
def test_a_record_expires_and_the_key_runs_again(world):
    claim = claim_of({"HTTP_IDEMPOTENCY_KEY": "retry-1", "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions"},
                     world.account_id, world.key_id, b"", 1)
    assert world.post().status_code == 200
    deadline = time.monotonic() + 10
    while world.relay.redis.exists(claim.redis_key) and time.monotonic() < deadline:
        time.sleep(0.1)
    again = world.post()
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert world.calls() == 2 and world.balance() == FUNDS - 2 * SMALL_CHAT


def test_a_record_survives_a_relay_restart(world):
    with RelayProcess(world.relay.settings) as relay:
        first = world.post(url=relay.url)
    with RelayProcess(world.relay.settings) as relay:  # a new process: nothing shared with the first but Redis
        again = world.post(url=relay.url)
    assert again.status_code == 200 and again.content == first.content and again.headers["Idempotent-Replayed"] == "true"
    assert world.calls() == 1 and world.balance() == FUNDS - SMALL_CHAT


@pytest.mark.parametrize("world", [{"idempotency_max_bytes": 200}], indirect=True)
def test_a_stream_over_the_cap_is_charged_once_and_its_replay_refused(world):
    body = dict(BODY, stream=True)
    world.upstream.push(Behaviour(content="a rather longer answer than two hundred bytes of stream can hold"))
    first = world.post(body)
    assert first.status_code == 200 and events_of(first.content)[-1] == "[DONE]"
    again = world.post(body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "idempotency_replay_unavailable"
    assert first.headers["X-Request-Id"] in again.json()["error"]["message"]
    assert world.calls() == 1
    assert_money_consistent(world.relay.redis)


def test_the_header_costs_one_round_trip_and_a_replay_one_in_all(world):
    relay = world.relay
    relay.chat(world.key)  # loads the scripts

    def with_key(idem: str):
        return lambda: relay.client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {world.key}",
                                                                                    "Idempotency-Key": idem})

    plain = relay.count_round_trips(lambda: relay.chat(world.key, refresh=False))
    first = relay.count_round_trips(with_key("counted"))
    replay = relay.count_round_trips(with_key("counted"))
    assert plain == ["EVALSHA", "EVALSHA"]
    assert first == ["EVALSHA", "EVALSHA", "EVALSHA"]
    assert replay == ["EVALSHA"]
