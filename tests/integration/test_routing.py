"""Routing and failover through the real relay (in this process) against fake upstreams on real
sockets: which channel/key is tried, when a request is retried and when never, what the caller sees,
what the channel's health makes of it, what is charged — and the decision trace that explains it."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ApiKey, ChannelEvent, ChannelKey, Group
from controlplane.services import limits as limit_service
from relay import pricing, tokens
from relay.settings import Timeouts
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI, bad_request, invalid_key, out_of_quota, rate_limited
from tests.relay_harness import Relay, assert_money_consistent, events_of, request_log, steps
from workers import health as health_worker

# Each test runs with admission in one script and split (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("admission_layout")

SMALL_CHAT = 111  # the fake's default usage (12 in, 5 out) at $3 / $15 per 1M tokens, in µ$
FUNDS = 10_000_000


@pytest.fixture(scope="module")
def upstreams():
    fakes = [FakeOpenAI() for _ in range(4)]
    yield fakes
    for fake in fakes:
        fake.close()


@dataclass
class World:
    relay: Relay
    key: str
    account_id: int
    a: FakeOpenAI
    b: FakeOpenAI
    c: FakeOpenAI
    d: FakeOpenAI

    def balance(self) -> int:
        from controlplane import ledger

        return ledger.stored_balance(self.account_id)


@pytest.fixture
def world(app, upstreams):
    for fake in upstreams:
        fake.reset_log()
    factories.price("gpt-4o-mini", input="3", output="15")
    user = factories.funded_user("10")
    _, secret = factories.api_key(user)
    relay = Relay(app, timeouts=Timeouts(connect=1.0, first_byte=3.0, idle=2.0, total=8.0))
    return World(relay, secret, user.account_id, *upstreams)


def channel(fake: FakeOpenAI, priority: int = 0, keys=("sk-up-1",), **kwargs):
    return factories.channel(fake.url, keys_=keys, priority=priority, **kwargs)


def test_a_failing_channel_is_passed_over_and_the_caller_never_knows(world):
    first, second = channel(world.a, priority=10), channel(world.b)
    world.a.default = Behaviour(status=500)
    reply = world.relay.chat(world.key)
    assert reply.status_code == 200 and reply.json["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert (len(world.a.chat_requests()), len(world.b.chat_requests())) == (1, 1)
    log = request_log(reply.headers["X-Request-Id"])
    assert [(s["channel"], s["status"]) for s in steps(log, "attempt")] == [(first.id, 500), (second.id, 200)]
    assert steps(log, "attempt")[0]["effect"] == "failure" and steps(log, "candidates")[0]["channels"] == [first.id, second.id]
    assert log.channel_id == second.id and log.cost == SMALL_CHAT
    assert world.balance() == FUNDS - SMALL_CHAT
    assert_money_consistent(world.relay.redis)


def test_a_request_costs_two_redis_round_trips_and_a_retry_one_more(world, admission_layout):
    """Split (a Redis Cluster's path), each of admit and settle is the money's call and the
    channel's; a retry records the failed attempt on its channel and picks on the next one. (The
    group does not queue here: split, a queue's gate is a call of its own, made at most once per
    QUEUE_QUIET_SECONDS by a relay that finds it empty: test_admission.py.)"""
    split = admission_layout == "split"
    for group in db.session.scalars(select(Group)):
        group.queue_seconds = 0
    db.session.commit()
    channel(world.a, priority=10)
    channel(world.b)
    world.relay.chat(world.key)  # loads the scripts
    plain = ["EVALSHA"] * (4 if split else 2)
    assert world.relay.count_round_trips(lambda: world.relay.chat(world.key, refresh=False)) == plain
    streamed = world.relay.count_round_trips(lambda: world.relay.chat(world.key, stream=True, refresh=False).get_data())
    assert streamed == plain
    world.a.push(Behaviour(status=503))
    retried = world.relay.count_round_trips(lambda: world.relay.chat(world.key, refresh=False))
    assert retried == ["EVALSHA"] * (6 if split else 3)
    limit_service.set_limits(factories.ACTOR, db.session.scalar(select(ApiKey)), rpm=1)
    world.relay.chat(world.key)
    refused = world.relay.count_round_trips(lambda: world.relay.chat(world.key, refresh=False))
    assert refused == ["EVALSHA", "XADD"]  # refused at admission, then logged


@pytest.mark.parametrize("dead", [invalid_key, out_of_quota], ids=["invalid-key", "upstream-quota-exhausted"])
def test_the_operators_dead_key_is_retried_then_disabled_by_the_worker(world, dead):
    ch = channel(world.a, keys=("sk-dead", "sk-good"))
    world.a.by_key["sk-dead"] = dead()
    reply = world.relay.chat(world.key)
    assert reply.status_code == 200  # the customer never sees the operator's dead key
    assert world.a.keys_seen() == ["sk-dead", "sk-good"]
    assert health_worker.apply_reports() == 1
    dead_row = db.session.scalar(select(ChannelKey).where(ChannelKey.channel_id == ch.id, ChannelKey.last4 == "dead"))
    assert dead_row.status == "auto_disabled" and dead_row.status_reason.startswith("upstream said: ")
    assert ("Incorrect API key" in dead_row.status_reason) or ("exceeded your current quota" in dead_row.status_reason)
    event = db.session.scalar(select(ChannelEvent).where(ChannelEvent.channel_key_id == dead_row.id))
    assert (event.actor, event.from_status, event.to_status) == ("relay", "enabled", "auto_disabled")
    for _ in range(4):
        assert world.relay.chat(world.key).status_code == 200
    assert world.a.keys_seen().count("sk-dead") == 1  # out of rotation at once, then out of the snapshot
    assert db.session.get(type(ch), ch.id).status == "enabled"  # the channel still has a good key


def test_a_channel_whose_every_key_is_dead_is_disabled_too(world):
    ch = channel(world.a, keys=("sk-dead",), priority=10)
    channel(world.b)
    world.a.by_key["sk-dead"] = invalid_key()
    for _ in range(2):
        world.relay.chat(world.key)
    assert health_worker.apply_reports() == 2  # the key, then its channel
    db.session.expire_all()
    assert db.session.get(type(ch), ch.id).status == "auto_disabled"
    assert "every key is disabled" in db.session.get(type(ch), ch.id).status_reason


def test_a_request_the_upstream_rejects_as_bad_is_never_retried_nor_charged(world):
    channel(world.a, priority=10)
    channel(world.b)
    world.a.push(bad_request())
    reply = world.relay.chat(world.key)
    assert reply.status_code == 400 and reply.json["error"]["code"] == "upstream_rejected_request"
    assert "temperature" in reply.json["error"]["message"]
    assert world.b.chat_requests() == []
    assert steps(request_log(reply.headers["X-Request-Id"]), "stop")[0]["why"] == "not retryable"
    assert world.balance() == FUNDS
    assert_money_consistent(world.relay.redis)


def test_attempts_stop_at_the_cap_and_a_total_failure_costs_nothing(world):
    for fake in (world.a, world.b, world.c, world.d):
        channel(fake)
        fake.default = Behaviour(status=502)
    reply = world.relay.chat(world.key)
    assert reply.status_code == 502 and reply.json["error"]["code"] == "upstream_error"
    assert sum(len(f.chat_requests()) for f in (world.a, world.b, world.c, world.d)) == 3
    log = request_log(reply.headers["X-Request-Id"])
    assert steps(log, "stop")[0]["why"] == "attempt cap reached" and log.cost == 0
    assert world.balance() == FUNDS
    assert_money_consistent(world.relay.redis)


def test_the_request_deadline_stops_retrying(app, world):
    relay = Relay(app, timeouts=Timeouts(connect=1.0, first_byte=0.4, idle=0.4, total=0.6))
    for fake, priority in ((world.a, 3), (world.b, 2), (world.c, 1)):
        channel(fake, priority=priority)
        fake.default = Behaviour(first_byte_delay=1.5)
    reply = relay.chat(world.key)
    assert reply.status_code == 504 and reply.json["error"]["code"] == "upstream_timeout"
    assert world.c.chat_requests() == []  # a third attempt had no time left
    assert steps(request_log(reply.headers["X-Request-Id"]), "stop")[0]["why"] == "deadline passed"


def test_a_channel_may_set_its_own_time_limits(world):
    channel(world.a, priority=10, config={"timeouts": {"first_byte": 0.3}})
    channel(world.b)
    world.a.default = Behaviour(first_byte_delay=1.0)  # it would answer, after the channel's limit
    reply = world.relay.chat(world.key)
    assert reply.status_code == 200
    attempts = steps(request_log(reply.headers["X-Request-Id"]), "attempt")
    assert attempts[0]["kind"] == "timeout" and len(world.b.chat_requests()) == 1


def test_no_retry_budget_still_fails_over_once_and_no_further(app, world):
    """The budget bounds the retries after a request's first failover: with none left, a failing
    channel is still passed over once (a healthy alternative is always tried), never twice."""
    relay = Relay(app, retry_budget_percent=0.0, retry_budget_min=0)
    channel(world.a, priority=10)
    channel(world.b, priority=5)
    channel(world.c)
    world.a.push(Behaviour(status=500))
    reply = relay.chat(world.key)
    assert reply.status_code == 200 and len(world.b.chat_requests()) == 1
    world.a.push(Behaviour(status=500))
    world.b.push(Behaviour(status=500))
    reply = relay.chat(world.key)
    assert reply.status_code == 502 and world.c.chat_requests() == []
    assert steps(request_log(reply.headers["X-Request-Id"]), "stop")[0]["why"] == "retry budget exhausted"


def test_invalid_json_is_retried_and_missing_usage_is_billed_from_the_relays_count(world):
    channel(world.a, priority=10)
    second = channel(world.b)
    world.a.push(Behaviour(malformed=True))
    world.b.push(Behaviour(send_usage=False, content="one two three"))
    reply = world.relay.chat(world.key)
    assert reply.status_code == 200
    log = request_log(reply.headers["X-Request-Id"])
    assert steps(log, "attempt")[0]["kind"] == "invalid_response" and log.channel_id == second.id
    expected = pricing.cost(pricing.Usage(input=tokens.prompt_tokens([{"role": "user", "content": "Say hello"}], None),
                                          output=tokens.text_tokens("one two three")), pricing.Price("gpt-4o-mini", 3_000_000, 15_000_000), 10_000)
    assert log.usage_source == "local" and log.cost == expected
    assert_money_consistent(world.relay.redis)


def test_after_the_first_byte_there_is_no_retry_and_only_delivered_tokens_are_charged(world):
    channel(world.a, priority=10)
    channel(world.b)
    world.a.push(Behaviour(reset_after_chunks=3))  # role chunk, "Hello", " from", then the connection drops
    reply = world.relay.chat(world.key, stream=True)
    events = events_of(reply.get_data())
    assert reply.status_code == 200
    assert [e["choices"][0]["delta"].get("content") for e in events[:3]] == ["", "Hello", " from"]
    assert events[-1]["error"]["code"] == "upstream_stream_interrupted" and "[DONE]" not in events
    assert world.b.chat_requests() == []
    log = request_log(reply.headers["X-Request-Id"])
    delivered = tokens.text_tokens("Hello") + tokens.text_tokens(" from")
    prompt = tokens.prompt_tokens([{"role": "user", "content": "Say hello"}], None)
    assert (log.status, log.output_tokens, log.input_tokens) == (502, delivered, prompt)
    assert log.cost == pricing.cost(pricing.Usage(input=prompt, output=delivered), pricing.Price("gpt-4o-mini", 3_000_000, 15_000_000), 10_000)
    assert_money_consistent(world.relay.redis)


def test_a_caller_going_away_closes_the_upstream_and_is_settled_once(world):
    channel(world.a)
    world.a.push(Behaviour(content="one two three four five six seven eight", chunk_gap=0.05))
    reply = world.relay.chat(world.key, stream=True, buffered=False)
    body = iter(reply.response)
    received = [next(body) for _ in range(3)]
    assert b"one" in received[1]
    reply.close()  # what the server does when the caller's socket is gone
    deadline = time.monotonic() + 3
    while not world.a.gone() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert world.a.gone(), "the upstream connection was not closed"
    log = request_log(reply.headers["X-Request-Id"])
    assert (log.status, log.error_code) == (499, "client_disconnected")
    assert 0 < log.output_tokens < tokens.text_tokens(" two three four five six seven eight") and log.cost > 0
    reply.close()  # a second close settles nothing more
    assert_money_consistent(world.relay.redis)


def test_a_429_cools_the_key_down_for_retry_after_and_requests_go_around_it(world):
    channel(world.a, priority=10)
    channel(world.b)
    world.a.push(rate_limited(30))
    assert world.relay.chat(world.key).status_code == 200
    second = world.relay.chat(world.key)
    assert second.status_code == 200 and len(world.a.chat_requests()) == 1 and len(world.b.chat_requests()) == 2
    assert [s["why"] for s in steps(request_log(second.headers["X-Request-Id"]), "skip")] == ["key_cooling"]


def test_five_failures_in_a_row_eject_a_channel_and_requests_skip_it(world):
    first = channel(world.a, priority=10)
    channel(world.b)
    world.a.default = Behaviour(status=500)
    for _ in range(5):
        assert world.relay.chat(world.key).status_code == 200
    sixth = world.relay.chat(world.key)
    assert len(world.a.chat_requests()) == 5
    assert steps(request_log(sixth.headers["X-Request-Id"]), "skip") == [
        {"step": "skip", "channel": first.id, "key": first.keys[0].id, "why": "channel_ejected"}]


def test_when_every_channel_is_ejected_requests_still_go_out_panic_routing(world):
    channel(world.a, priority=10)
    channel(world.b)
    world.a.default = world.b.default = Behaviour(status=500)
    for _ in range(5):
        assert world.relay.chat(world.key).status_code == 502
    world.a.default = world.b.default = Behaviour()
    reply = world.relay.chat(world.key)
    assert reply.status_code == 200  # not a blanket 503
    assert steps(request_log(reply.headers["X-Request-Id"]), "pick")[0]["panic"] is True


def test_a_key_over_its_requests_per_minute_gets_429_with_retry_after(world):
    channel(world.a)
    key_row = db.session.scalar(select(ApiKey))
    limit_service.set_limits(factories.ACTOR, key_row, rpm=2)
    assert [world.relay.chat(world.key).status_code for _ in range(2)] == [200, 200]
    refused = world.relay.chat(world.key)
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limit_rpm"
    assert 1 <= int(refused.headers["Retry-After"]) <= 90
    assert len(world.a.chat_requests()) == 2


def test_a_channel_at_capacity_is_skipped_without_using_an_attempt_and_all_full_is_429(world):
    factories.group_queue(0)  # no capacity queue: all full is a 429 at once (tests/integration/test_capacity_queue.py waits)
    full = channel(world.a, priority=10)
    limit_service.set_limits(factories.ACTOR, full, concurrency=1)
    spare = channel(world.b)
    limit_service.set_limits(factories.ACTOR, spare, each_key=True, concurrency=1)
    world.a.default = world.b.default = Behaviour(first_byte_delay=0.6)
    world.relay.app.holder.refresh()
    replies: list = [None] * 3
    started = threading.Barrier(3)

    def call(i):
        started.wait()
        replies[i] = world.relay.chat(world.key)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 200, 429]
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.json["error"]["code"] == "upstream_capacity_reached" and int(refused.headers["Retry-After"]) >= 1
    assert (world.a.max_in_flight, world.b.max_in_flight) == (1, 1)
    assert (len(world.a.chat_requests()), len(world.b.chat_requests())) == (1, 1)
    assert_money_consistent(world.relay.redis)


# The failure table (docs/failures.md), one channel so nothing hides behind a retry:
# fault → status and code the caller sees → what it does to the channel/key → charge (always 0 here).
FAULTS = [
    ("5xx", Behaviour(status=500), 502, "upstream_error", "failure"),
    ("overloaded-503", Behaviour(status=503), 429, "upstream_rate_limited", "failure"),
    ("rate-limited-429", rate_limited(12), 429, "upstream_rate_limited", "cooldown"),
    ("invalid-key-401", invalid_key(), 503, "no_channel_available", "dead"),
    ("upstream-quota", out_of_quota(), 503, "no_channel_available", "dead"),
    ("model-unknown-404", Behaviour(status=404), 503, "no_channel_available", "none"),
    ("bad-request-400", bad_request(), 400, "upstream_rejected_request", "none"),
    ("invalid-json", Behaviour(malformed=True), 502, "upstream_invalid_response", "failure"),
    ("slow-first-byte", Behaviour(first_byte_delay=1.0), 504, "upstream_timeout", "failure"),
]


@pytest.mark.parametrize("fault, status, code, effect", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_the_failure_table(world, fault, status, code, effect):
    from relay.health import Health

    ch = channel(world.a, config={"timeouts": {"first_byte": 0.3}})
    world.a.push(fault)
    reply = world.relay.chat(world.key)
    assert (reply.status_code, reply.json["error"]["code"]) == (status, code)
    assert "sk-up-1" not in reply.get_data(as_text=True) and "127.0.0.1" not in reply.get_data(as_text=True)
    if status == 429:
        assert int(reply.headers["Retry-After"]) >= 1
    health = Health(world.relay.redis)
    key, ch_health = health.key(ch.id, ch.keys[0].id), health.channel(ch.id)
    seen = {name for name, yes in (("failure", ch_health.failures == 1 and key.failures == 1),
                                   ("cooldown", key.cooling_until > 0), ("dead", key.dead_since is not None)) if yes}
    assert seen == ({effect} if effect != "none" else set())
    assert request_log(reply.headers["X-Request-Id"]).cost == 0 and world.balance() == FUNDS


def test_an_unreachable_channel_is_passed_over(world):
    channel_view = factories.channel("http://127.0.0.1:9/v1", priority=10)
    channel(world.b)
    reply = world.relay.chat(world.key)
    assert reply.status_code == 200
    attempt = steps(request_log(reply.headers["X-Request-Id"]), "attempt")[0]
    assert (attempt["channel"], attempt["kind"], attempt["status"]) == (channel_view.id, "connect", 0)


def test_a_stream_that_stalls_longer_than_the_idle_gap_ends_with_an_error_event(world):
    channel(world.a, config={"timeouts": {"idle": 0.3}})
    world.a.push(Behaviour(content="slow drip of words", chunk_gap=0.6))
    reply = world.relay.chat(world.key, stream=True)
    events = events_of(reply.get_data())
    assert events[0]["choices"][0]["delta"]["content"] == "" and events[-1]["error"]["code"] == "upstream_stream_interrupted"
    assert "[DONE]" not in events
    log = request_log(reply.headers["X-Request-Id"])
    assert log.status == 502 and 0 < log.cost
    assert_money_consistent(world.relay.redis)


def test_a_stream_that_ends_without_done_or_usage_is_an_interrupted_stream(world):
    channel(world.a)
    world.a.push(Behaviour(send_done=False, send_usage=False))
    events = events_of(world.relay.chat(world.key, stream=True).get_data())
    assert events[-1]["error"]["code"] == "upstream_stream_interrupted" and "[DONE]" not in events


def test_a_stream_that_breaks_before_its_first_event_is_retried_elsewhere(world):
    channel(world.a, priority=10)
    channel(world.b)
    world.a.push(Behaviour(reset_after_chunks=0))
    body = world.relay.chat(world.key, stream=True).get_data()
    assert body.rstrip().endswith(b"data: [DONE]") and b"Hello" in body
    assert len(world.b.chat_requests()) == 1


def test_a_malformed_event_after_the_first_one_ends_the_stream_without_retry(world):
    channel(world.a, priority=10)
    channel(world.b)
    world.a.push(Behaviour(malformed=True))  # the role chunk went out, then a broken event
    events = events_of(world.relay.chat(world.key, stream=True).get_data())
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["error"]["code"] == "upstream_stream_interrupted" and "[DONE]" not in events
    assert world.b.chat_requests() == []


@pytest.mark.parametrize("scope", ["key", "user", "group"])
def test_each_caller_scope_has_its_own_limit(world, scope):
    from controlplane.models import Group, User

    channel(world.a)
    target = {"key": lambda: db.session.scalar(select(ApiKey)), "user": lambda: db.session.scalar(select(User).where(User.account_id == world.account_id)),
              "group": lambda: db.session.scalar(select(Group))}[scope]()
    limit_service.set_limits(factories.ACTOR, target, concurrency=1, rpm=1)
    assert world.relay.chat(world.key).status_code == 200
    refused = world.relay.chat(world.key)
    label = {"key": "API key", "user": "account", "group": "group"}[scope]
    assert refused.status_code == 429 and f"This {label} is over its limit" in refused.json["error"]["message"]
