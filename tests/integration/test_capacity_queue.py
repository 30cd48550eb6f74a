"""The capacity queue through two real relays (in this process, one Redis) against a fake upstream:
when every route of a model is full a request waits its turn instead of an instant 429 — fairly
across keys and accounts, higher-priority groups first, never past its group's limit — and an
overflow is a 429 whose Retry-After comes from the queue. Nothing is held while a request waits."""
from __future__ import annotations

import threading

import pytest

from controlplane.services import limits as limit_service
from relay.capacity_queue import spot_for
from relay.settings import Timeouts
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.relay_harness import Relay, assert_money_consistent, request_log, steps

# Each test runs with admission in one script and split (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("admission_layout")

TIMEOUTS = Timeouts(connect=1.0, first_byte=5.0, idle=3.0, total=10.0)


@pytest.fixture(scope="module")
def upstream():
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture
def relays(app, upstream):
    upstream.reset_log()
    factories.price("gpt-4o-mini", input="3", output="15")
    return Relay(app, timeouts=TIMEOUTS), Relay(app, timeouts=TIMEOUTS)


def caller(group: str | None = None) -> str:
    user = factories.funded_user("10", group=group)
    return factories.api_key(user)[1]


def full_channel(upstream: FakeOpenAI, capacity: int):
    ch = factories.channel(upstream.url, keys_=("sk-q-1",))
    limit_service.set_limits(factories.ACTOR, ch, concurrency=capacity)
    return ch


def run_all(calls: list) -> list:
    """Run the calls at once (each in a thread); their replies, in order."""
    replies: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def go(i):
        start.wait()
        replies[i] = calls[i]()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return replies


def served_order(upstream: FakeOpenAI) -> list[str]:
    """Who each upstream call was for, in the order the upstream got them (the caller's tag is the message)."""
    return [r["body"]["messages"][0]["content"].split(":")[0] for r in upstream.chat_requests()]


def waiting(relay: Relay, ch, model: str = "gpt-4o-mini") -> int:
    from controlplane.extensions import db

    relay.app.holder.refresh()
    channels = relay.app.holder.current.channels_for("default", model)
    db.session.expire_all()
    return relay.redis.zcard(spot_for(model, tuple(c for c in channels if c.id == ch.id)).keys[0])


def test_twenty_requests_from_two_keys_on_two_relays_are_all_served_interleaved_within_the_limit(relays, upstream):
    factories.group_queue(8)
    full_channel(upstream, 2)
    upstream.default = Behaviour(first_byte_delay=0.25)
    a, b = caller(), caller()
    one, two = relays
    calls = []
    for i in range(10):  # key A's ten first, then key B's: arrival order must not decide who waits
        calls.append(lambda i=i: (one if i % 2 else two).chat(a, messages=[{"role": "user", "content": f"A: {i}"}]))
    for i in range(10):
        calls.append(lambda i=i: (two if i % 2 else one).chat(b, messages=[{"role": "user", "content": f"B: {i}"}]))
    replies = run_all(calls)
    assert [r.status_code for r in replies] == [200] * 20
    assert upstream.max_in_flight == 2
    order = served_order(upstream)
    assert sorted(order) == ["A"] * 10 + ["B"] * 10
    queued = order[2:]  # the first two found free slots; the rest were served from the queue
    for n in range(1, 19):  # in turn: neither key is ever more than two ahead of the other
        assert abs(queued[:n].count("A") - queued[:n].count("B")) <= 2, order
    logs = [request_log(r.headers["X-Request-Id"]) for r in replies]
    waited = [(log, steps(log, "queue")[0]) for log in logs if steps(log, "queue")]
    assert len(waited) >= 16  # all but the first two (give or take a slot freed while they arrived)
    assert all(q["result"] == "served" and 0 <= q["waited_ms"] <= 8000 for _, q in waited)
    assert all(log.queue_ms == (q["waited_ms"] or None) for log, q in waited)  # on the request's log, as in its trace
    assert_money_consistent(one.redis)


def test_an_overflow_is_a_429_with_retry_after_from_the_queue_and_nothing_is_held(relays, upstream):
    factories.group_queue(1)
    full_channel(upstream, 1)
    upstream.default = Behaviour(first_byte_delay=2.5)
    key = caller()
    one, two = relays
    replies = run_all([lambda: one.chat(key), lambda: two.chat(key)])
    assert sorted(r.status_code for r in replies) == [200, 429]
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.json["error"]["code"] == "upstream_capacity_reached" and int(refused.headers["Retry-After"]) >= 1
    entry = steps(request_log(refused.headers["X-Request-Id"]), "queue")[0]
    assert entry["result"] == "overflow" and 1000 <= entry["waited_ms"] < 2500 and entry["retry_after"] >= 1
    assert len(upstream.chat_requests()) == 1
    assert_money_consistent(one.redis)


def test_a_group_with_no_queue_gets_its_429_at_once(relays, upstream):
    factories.group_queue(0)
    full_channel(upstream, 1)
    upstream.default = Behaviour(first_byte_delay=1.0)
    key = caller()
    one, two = relays
    replies = run_all([lambda: one.chat(key), lambda: two.chat(key)])
    assert sorted(r.status_code for r in replies) == [200, 429]
    refused = next(r for r in replies if r.status_code == 429)
    assert steps(request_log(refused.headers["X-Request-Id"]), "queue") == []


def test_a_higher_priority_group_is_served_first_and_a_busy_key_cannot_starve_another(relays, upstream):
    from controlplane.services import groups

    groups.create_group(factories.ACTOR, "gold", queue_seconds=10, priority=10)
    factories.group_queue(10)
    ch = factories.channel(upstream.url, keys_=("sk-q-1",), groups=[])
    limit_service.set_limits(factories.ACTOR, ch, concurrency=1)
    upstream.default = Behaviour(first_byte_delay=0.3)
    busy, quiet, gold = caller(), caller(), caller("gold")
    one, two = relays
    threads = [threading.Thread(target=lambda i=i: one.chat(busy, messages=[{"role": "user", "content": f"busy: {i}"}])) for i in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: waiting(one, ch) == 5)  # one in flight, five waiting
    late = [threading.Thread(target=lambda: two.chat(quiet, messages=[{"role": "user", "content": "quiet: 0"}])),
            threading.Thread(target=lambda: two.chat(gold, messages=[{"role": "user", "content": "gold: 0"}]))]
    late[0].start()
    wait_until(lambda: waiting(one, ch) == 6)
    late[1].start()
    for t in threads + late:
        t.join(30)
    order = served_order(upstream)
    assert order[0] == "busy" and order[1] == "gold"  # the gold group jumps the queue
    assert order.index("quiet") <= 3  # the quiet key goes in at its fair share, not behind the busy key's five


def wait_until(check, tries: int = 500) -> None:
    import time

    for _ in range(tries):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("condition never held")


def test_keys_cooling_down_for_longer_than_the_queue_waits_answer_at_once(relays, upstream):
    from tests.fakes.openai_server import rate_limited

    factories.group_queue(5)
    factories.channel(upstream.url, keys_=("sk-q-1",))
    upstream.push(rate_limited(60))
    key = caller()
    one, _ = relays
    assert one.chat(key).status_code == 429  # the upstream's own 429 rests the key for 60 s
    again = one.chat(key)
    assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 55
    assert steps(request_log(again.headers["X-Request-Id"]), "queue") == []


def test_the_queue_order_is_fair_by_key_then_account_with_higher_priority_first(redis_client):
    """The order tickets are served in, straight from the queue's scripts (no timing involved)."""
    from relay.capacity_queue import CapacityQueue
    from relay.snapshot import ChannelKeyView, ChannelView

    queue = CapacityQueue(redis_client.register_script, clock=lambda: 1_700_000_000.0)
    channel = ChannelView(id=1, name="c", type="openai", base_url="http://x", models=("m",), keys=(ChannelKeyView(id=1, secret="s"),))
    spot = spot_for("m", (channel,))

    def join(ticket: str, account: int, key: int, priority: int = 0) -> None:
        assert queue._join(keys=list(spot.keys), args=[1_700_000_000.0, ticket, 1_700_000_003.0, priority, account, key, 10])[0] == b"in"

    for i in range(4):
        join(f"x1-{i}", account=1, key=11)  # account 1's first key arrives with four
    for i in range(4):
        join(f"x2-{i}", account=1, key=12)  # then its second key
    for i in range(4):
        join(f"y-{i}", account=2, key=21)  # then another account's only key
    join("gold", account=3, key=31, priority=5)
    order = [t.decode() for t in redis_client.zrange(spot.keys[0], 0, -1)]
    assert order[0] == "gold"  # a higher-priority group first, whenever it came
    who = [t.split("-")[0] for t in order[1:]]
    assert who[:8].count("y") >= 3  # the other account is served in turn, not behind all of account 1's
    assert "x2" in who[:4]  # nor is a key behind its own account's busy key
    for ticket in order:
        queue._leave(keys=list(spot.keys), args=[1_700_000_000.0, ticket])
    # When an account's keys wait together, each key steps by the number of them: the account as a
    # whole gets one account's share.
    for i in range(4):
        join(f"x1-{i}", account=1, key=11)
        join(f"x2-{i}", account=1, key=12)
        join(f"y-{i}", account=2, key=21)
    who = [t.decode().split("-")[0] for t in redis_client.zrange(spot.keys[0], 0, -1)]
    assert who[:8].count("y") == 4 and who[-4:].count("y") == 0
    for ticket in redis_client.zrange(spot.keys[0], 0, -1):
        queue._leave(keys=list(spot.keys), args=[1_700_000_000.0, ticket.decode()])
    assert redis_client.zcard(spot.keys[0]) == 0 and not redis_client.exists(spot.keys[2])  # empty: its state is gone too
    for ticket in order:
        queue._leave(keys=list(spot.keys), args=[1_700_000_000.0, ticket])
    assert redis_client.zcard(spot.keys[0]) == 0 and not redis_client.exists(spot.keys[2])


def test_a_request_the_queue_cannot_serve_within_its_limit_is_refused_at_once_with_the_queues_wait(redis_client):
    from relay.capacity_queue import CapacityQueue
    from relay.snapshot import ChannelKeyView, ChannelView

    queue = CapacityQueue(redis_client.register_script, clock=lambda: 1_700_000_000.0)
    channel = ChannelView(id=2, name="c", type="openai", base_url="http://x", models=("m",), keys=(ChannelKeyView(id=2, secret="s"),))
    spot = spot_for("m", (channel,))
    redis_client.hset(spot.keys[3], "gap", 2.0)  # the queue has been serving one request every 2 s

    def join(ticket: str, key: int, priority: int = 0, limit: int = 5) -> list:
        return queue._join(keys=list(spot.keys), args=[1_700_000_000.0, ticket, 1_700_000_003.0, priority, key, key, limit])

    assert join("a", 1)[0] == b"in" and join("b", 2)[0] == b"in"  # served in about 2 s and 4 s
    assert join("c", 3) == [b"full", 6]  # about 6 s: past its 5 s limit, so told at once to come back then
    assert join("gold", 4, priority=5)[0] == b"in"  # a higher priority goes before both: it would be served next
    assert redis_client.zcard(spot.keys[0]) == 3


def test_a_waiter_whose_relay_died_stops_blocking_the_queue_within_seconds(redis_client):
    """A ticket is kept alive by its waiter's polls; a relay that died leaves one that is swept once
    its beat lapses, and the next request goes ahead. Nothing was ever held for it."""
    from relay.admission import Gate, MoneyHold
    from relay.capacity_queue import BEAT_SECONDS, CapacityQueue, Queued
    from relay.health import HealthPolicy
    from relay.quota import Quota
    from relay.selector import Plan, Route
    from relay.snapshot import ChannelKeyView, ChannelView
    from tests.fakes.clock import Clock

    clock = Clock()
    Quota(redis_client).seed_account(1, 1_000_000)
    gate = Gate(redis_client, HealthPolicy(), lease_seconds=60, clock=clock)
    queue = CapacityQueue(redis_client.register_script, clock=clock)
    channel = ChannelView(id=3, name="c", type="openai", base_url="http://x", models=("m",), keys=(ChannelKeyView(id=3, secret="s"),))
    plan = Plan((channel,), (Route(channel, channel.keys[0], "m"),))
    spot = spot_for("m", plan.channels)
    queue._join(keys=list(spot.keys), args=[clock(), "req_dead", clock() + BEAT_SECONDS, 0, 1, 7, 10])
    with pytest.raises(Queued):  # someone waits: a newcomer goes behind
        gate.admit(MoneyHold("req_new", 1, 8, 100, None, 2e9), (), plan, queue=spot)
    clock.advance(BEAT_SECONDS + 0.1)  # the dead waiter never polled again
    admitted = gate.admit(MoneyHold("req_new", 1, 8, 100, None, 2e9), (), plan, queue=spot)
    assert admitted.route.key.id == 3 and redis_client.zcard(spot.keys[0]) == 0
    assert Quota(redis_client).account(1) == (1_000_000, 100)  # only the admitted request holds anything
