"""The relay's admission in Redis: caller limits, route choice (health, capacity, panic), the hold,
failover and settle — each one script, all-or-nothing, settled once."""
from __future__ import annotations

import pytest

from relay import idempotency, redis_keys
from relay import quota as quota_module
from relay import admission_scripts
from relay.admission import Gate, LimitRefused, MoneyHold, NoRoute
from relay.health import Effect, Health, HealthPolicy, Outcome
from relay.limits import Scope
from relay.quota import HoldRefused, Quota
from relay.redis_keys import HEALTH_LAST_OK
from relay.routing import remaining_routes
from relay.selector import Plan, Route
from relay.snapshot import ChannelKeyView, ChannelView, Limits
from tests.fakes.clock import Clock

ACCOUNT, KEY = 1, 7


NO_LIMITS = Limits()


def channel(cid: int, keys: int = 1, limits: Limits = NO_LIMITS, key_limits: Limits = NO_LIMITS) -> ChannelView:
    views = tuple(ChannelKeyView(id=cid * 10 + i, secret="sk", since=0.0) for i in range(keys))
    return ChannelView(id=cid, name=f"c{cid}", type="openai", base_url="http://x", models=("m",), keys=views,
                       limits=limits, key_limits=key_limits)


def plan_of(*channels: ChannelView) -> Plan:
    return Plan(channels, tuple(Route(c, k, "m") for c in channels for k in c.keys))


@pytest.fixture
def clock():
    return Clock(1_700_000_030.0)  # half-way through a minute


# Every test runs admit and settle both as one script each (one Redis server) and split into their
# money and route halves (Redis Cluster), on the one local server.
@pytest.fixture(params=[False, True], ids=["one-script", "split"])
def gate(redis_client, clock, request):
    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    return Gate(redis_client, HealthPolicy(), lease_seconds=600, clock=clock, split=request.param)


@pytest.fixture
def health(redis_client, clock):
    return Health(redis_client, HealthPolicy(), clock)


_ids = iter(range(1, 10_000))


def admit(gate, plan, scopes=(), amount=100):
    return gate.admit(MoneyHold(f"req_{next(_ids)}", ACCOUNT, KEY, amount, None, 2e9), tuple(scopes), plan)


def settle(gate, admission, cost=0, tokens=0, outcome=None):
    return gate.settle(admission, cost, b"{}", tokens, outcome)


def eject_channel(health, cid):
    for _ in range(5):
        health.record(Outcome(Effect.FAILURE, cid, cid * 10))


def test_the_first_route_in_order_is_taken_and_money_is_held(gate, redis_client):
    admission = admit(gate, plan_of(channel(1), channel(2)))
    assert admission.route.ids == (1, 10) and admission.skips == [] and not admission.panic
    assert Quota(redis_client).account(ACCOUNT) == (1_000_000, 100)
    assert settle(gate, admission, cost=40)[0]
    assert Quota(redis_client).account(ACCOUNT) == (999_960, 0)


def test_an_ejected_channel_is_skipped_and_said_so(gate, health):
    eject_channel(health, 1)
    admission = admit(gate, plan_of(channel(1), channel(2), channel(3)))
    assert admission.route.channel.id == 2
    assert [(r.channel.id, why) for r, why in admission.skips] == [(1, "channel_ejected")]


def test_more_than_half_ejected_is_panic_routing_over_all_of_them(gate, health):
    for cid in (1, 2):
        eject_channel(health, cid)
    admission = admit(gate, plan_of(channel(1), channel(2), channel(3)))
    assert admission.panic and admission.route.channel.id == 1  # ejections ignored: order decides
    both = admit(gate, plan_of(channel(1), channel(2)))
    assert both.panic and both.route.channel.id == 1  # never a blanket 503


def test_half_ejected_is_not_panic(gate, health):
    eject_channel(health, 1)
    admission = admit(gate, plan_of(channel(1), channel(2)))
    assert not admission.panic and admission.route.channel.id == 2


def test_cooling_and_dead_keys_are_skipped_and_a_re_enabled_key_is_usable(gate, health, clock):
    ch = channel(1, keys=3)
    health.record(Outcome(Effect.COOLDOWN, 1, 10, retry_after=20))
    health.record(Outcome(Effect.DEAD_KEY, 1, 11, key_since=0.0, kind="auth"))
    admission = admit(gate, plan_of(ch))
    assert admission.route.key.id == 12
    assert [why for _, why in admission.skips] == ["key_cooling", "key_dead"]
    # The operator re-enabled key 11 after the relay marked it: the snapshot's `since` is newer.
    fresh = ChannelView(id=1, name="c1", type="openai", base_url="http://x", models=("m",),
                        keys=(ChannelKeyView(id=11, secret="sk", since=clock.now + 1),))
    assert admit(gate, plan_of(fresh)).route.key.id == 11


def test_only_cooling_keys_left_is_a_429_with_the_wait(gate, health):
    health.record(Outcome(Effect.COOLDOWN, 1, 10, retry_after=20))
    with pytest.raises(NoRoute) as refused:
        admit(gate, plan_of(channel(1)))
    assert refused.value.retry_after == 20


def test_a_channel_at_capacity_is_skipped_and_frees_up_at_settle(gate, redis_client):
    plan = plan_of(channel(1, limits=Limits(concurrency=1)), channel(2, key_limits=Limits(concurrency=1)))
    first = admit(gate, plan)
    second = admit(gate, plan)
    assert (first.route.channel.id, second.route.channel.id) == (1, 2)
    assert [(r.channel.id, why) for r, why in second.skips] == [(1, "channel_concurrency")]
    assert second.tried == [(2, 20)]  # skipping for capacity is not an attempt
    with pytest.raises(NoRoute) as full:
        admit(gate, plan)
    assert full.value.retry_after >= 1
    held_before = Quota(redis_client).account(ACCOUNT)[1]
    assert held_before == 200  # the refused admission held nothing
    settle(gate, first)
    assert admit(gate, plan).route.channel.id == 1


def test_requests_per_minute_of_a_key_refuse_with_retry_after_and_write_nothing(gate, redis_client):
    scopes = [Scope(f"k:{KEY}", Limits(rpm=2))]
    plan = plan_of(channel(1))
    admit(gate, plan, scopes)
    admit(gate, plan, scopes)
    with pytest.raises(LimitRefused) as refused:
        admit(gate, plan, scopes)
    assert (refused.value.scope, refused.value.which) == ("k:7", "rpm")
    assert 1 <= refused.value.retry_after <= 90
    assert Quota(redis_client).account(ACCOUNT)[1] == 200


def test_a_burst_across_a_minute_boundary_gets_the_limit_not_double(gate, clock):
    scopes = [Scope("g:default", Limits(rpm=5))]
    plan = plan_of(channel(1))
    clock.now = 1_700_000_039.5  # 0.5 s before a minute starts (1_700_000_040 is a multiple of 60)
    admitted = 0
    for _step in range(10):
        clock.now += 0.1
        try:
            admit(gate, plan, scopes)
            admitted += 1
        except LimitRefused:
            pass
    assert admitted == 5


def test_tokens_per_minute_count_real_usage_at_settle(gate):
    scopes = [Scope("u:3", Limits(tpm=1000))]
    plan = plan_of(channel(1))
    first = admit(gate, plan, scopes)
    settle(gate, first, tokens=1200)
    with pytest.raises(LimitRefused) as refused:
        admit(gate, plan, scopes)
    assert refused.value.which == "tpm"


def test_concurrency_of_a_user_frees_when_a_relay_dies_holding_it(gate, clock):
    scopes = [Scope("u:3", Limits(concurrency=1))]
    plan = plan_of(channel(1))
    admit(gate, plan, scopes)  # never settled: its relay crashed
    with pytest.raises(LimitRefused):
        admit(gate, plan, scopes)
    clock.advance(601)  # the lease ran out
    admit(gate, plan, scopes)


def test_a_money_refusal_takes_no_limit_slot(gate, redis_client):
    scopes = [Scope(f"k:{KEY}", Limits(rpm=1, concurrency=1))]
    with pytest.raises(HoldRefused):
        admit(gate, plan_of(channel(1, limits=Limits(concurrency=1))), scopes, amount=5_000_000)
    admitted = admit(gate, plan_of(channel(1, limits=Limits(concurrency=1))), scopes)
    assert admitted.route.channel.id == 1


def test_failover_records_the_failure_moves_the_capacity_slot_and_skips_tried_routes(gate, health):
    plan = plan_of(channel(1, limits=Limits(concurrency=1)), channel(2))
    admission = admit(gate, plan)
    failed = Outcome(Effect.FAILURE, 1, 10, kind="transient", message="500")
    route, _, record = gate.failover(admission, failed, remaining_routes(plan, admission.tried, {1}))
    assert route.ids == (2, 20) and record[0] == "failure"
    assert admission.tried == [(1, 10), (2, 20)]
    assert health.channel(1).failures == 1
    assert admit(gate, plan).route.channel.id == 1  # channel 1's slot was given back


def test_settle_happens_once_with_everything_in_it(gate, health, redis_client):
    scopes = [Scope("u:3", Limits(tpm=10_000, concurrency=5))]
    admission = admit(gate, plan_of(channel(1)), scopes)
    health.record(Outcome(Effect.FAILURE, 1, 10))
    failure = Outcome(Effect.FAILURE, 1, 10)
    assert settle(gate, admission, cost=30, tokens=500, outcome=failure) == (True, ["failure", 0, 0], 30)
    assert settle(gate, admission, cost=30, tokens=500, outcome=failure) == (False, [], 0)
    assert Quota(redis_client).account(ACCOUNT) == (999_970, 0)
    assert health.channel(1).failures == 2  # not 3
    window = [k for k in redis_client.keys("sb:lim:u:3:t:*")]
    assert len(window) == 1 and int(redis_client.get(window[0])) == 500


def test_a_success_resets_failures_and_the_last_success_time_is_written_once_a_second(gate, health, redis_client, clock):
    """Settles that succeed clear the consecutive failures of their key and channel; the time of the
    last success anywhere (the network detector's) is written by a relay at most once a second."""
    ok = Outcome(Effect.OK, 1, 10)
    health.record(Outcome(Effect.FAILURE, 1, 10))
    assert settle(gate, admit(gate, plan_of(channel(1))), outcome=ok)[1] == ["ok", 0, 0]
    assert health.key(1, 10).failures == 0 and health.channel(1).failures == 0
    if gate.split:  # each relay watches its own network (test_split_each_relay_watches_its_own_network)
        assert redis_client.get(HEALTH_LAST_OK) is None
        return
    first = float(redis_client.get(HEALTH_LAST_OK))
    assert first == clock.now
    clock.advance(0.5)
    settle(gate, admit(gate, plan_of(channel(1))), outcome=ok)
    assert float(redis_client.get(HEALTH_LAST_OK)) == first
    clock.advance(0.6)
    settle(gate, admit(gate, plan_of(channel(1))), outcome=ok)
    assert float(redis_client.get(HEALTH_LAST_OK)) == clock.now


def test_split_each_relay_watches_its_own_network(redis_client, clock, health):
    """Split, health is under each channel's tag, so a relay judges its own network: attempts that
    got no answer from two channels, with nothing answering lately, are not held against them, while
    another relay (whose requests are answered) still counts its failures."""
    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    cut_off, fine = (Gate(redis_client, HealthPolicy(), lease_seconds=600, clock=clock, split=True) for _ in range(2))
    settle(fine, admit(fine, plan_of(channel(3))), outcome=Outcome(Effect.OK, 3, 30))
    for relay, cid in ((cut_off, 1), (cut_off, 2), (fine, 2)):
        admission = admit(relay, plan_of(channel(cid)))
        silent = Outcome(Effect.FAILURE, cid, admission.route.key.id, kind="connect", network=True)
        assert relay.failover(admission, silent, []) [2][0] == ("not_counted" if relay is cut_off and cid == 2 else "failure")
        settle(relay, admission, outcome=None)
    assert health.channel(1).failures == 1 and health.channel(2).failures == 1  # the second was cut_off's network
    clock.advance(1)
    settle(cut_off, admit(cut_off, plan_of(channel(3))), outcome=Outcome(Effect.OK, 3, 30))  # answered again
    admission = admit(cut_off, plan_of(channel(2)))
    assert cut_off.failover(admission, Outcome(Effect.FAILURE, 2, 20, network=True), [])[2][0] == "failure"
    assert health.channel(2).failures == 2


def test_split_a_refused_route_half_gives_back_the_hold_its_windows_and_the_claim(redis_client, clock):
    """Under Redis Cluster the money half runs first; when the route half refuses, the hold (with
    every scope it reserved in) and the idempotency claim it marked are undone, leaving no record."""
    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    gate = Gate(redis_client, HealthPolicy(), lease_seconds=600, clock=clock, split=True)
    claim = idempotency.claim_of({"HTTP_IDEMPOTENCY_KEY": "k-1", "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions"},
                                 ACCOUNT, KEY, b"{}", 60)
    budgets = quota_module.Budgets(daily=10_000, monthly=50_000)
    money = MoneyHold("req_refused", ACCOUNT, KEY, 300, 5_000, 2e9, budgets, 3, clock())
    scopes = (Scope(f"k:{KEY}", Limits(rpm=1)),)
    plan = plan_of(channel(1))
    first = gate.admit(MoneyHold("req_first", ACCOUNT, KEY, 100, 5_000, 2e9, budgets, 3, clock()), scopes, plan)
    before = {k: redis_client.hgetall(k) for k in redis_client.keys("sb:*") if redis_client.type(k) == b"hash"}
    with pytest.raises(LimitRefused):
        gate.admit(money, scopes, plan, claim)
    after = {k: redis_client.hgetall(k) for k in redis_client.keys("sb:*") if redis_client.type(k) == b"hash"}
    assert after == before  # account, key and both windows hold only the first request's 100
    assert Quota(redis_client).account(ACCOUNT) == (1_000_000, 100)
    assert redis_client.zrange(redis_keys.holds_key(0), 0, -1) == [b"req_first"]
    assert not redis_client.exists(redis_keys.hold_key(0, "req_refused"), claim.redis_key)
    assert settle(gate, first, cost=60)[0]
    assert Quota(redis_client).account(ACCOUNT) == (999_940, 0)


def test_split_settles_money_once_and_then_the_route_half(redis_client, clock):
    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    gate = Gate(redis_client, HealthPolicy(), lease_seconds=600, clock=clock, split=True)
    scopes = (Scope(f"k:{KEY}", Limits(concurrency=1)),)
    plan = plan_of(channel(1, limits=Limits(concurrency=1)))
    admission = admit(gate, plan, scopes)
    with pytest.raises(LimitRefused):
        admit(gate, plan, scopes)
    assert settle(gate, admission, cost=40, outcome=Outcome(Effect.OK, 1, 10)) == (True, ["ok", 0, 0], 40)
    assert settle(gate, admission, cost=40) == (False, [], 0)
    assert Quota(redis_client).account(ACCOUNT) == (999_960, 0)
    # The second settle found no hold: its event is marked unheld, which ingestion charges only when
    # SQL has no such request (it has: the first event).
    assert [b"unheld" in fields for _, fields in redis_client.xrange(redis_keys.usage_stream(0))] == [False, True]
    settle(gate, admit(gate, plan, scopes), cost=0)  # the leases came back with the first settle


def test_split_a_hold_it_cannot_undo_is_journaled_and_the_request_ends_as_redis_unavailable(redis_client, clock, tmp_path):
    """Redis fails after the money half (the connection drops: injected at the client): the undo
    fails too, so the hold and the idempotency claim it marked go to the settle journal as an
    abandoned admission (relay/billing.py), and the request ends as Redis unavailable, not as a
    refusal it could wait out and come back with under the same request id. Once Redis answers, the
    journal's replay releases both: a retry under the same Idempotency-Key runs again at once."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from relay.billing import Charges
    from relay.journal import Abandoned, Replayer, SettleJournal, decode_line
    from relay.retry_budget import RetryBudget

    calls = [0]

    def register(text):
        script = redis_client.register_script(text)

        def run(keys=(), args=()):
            if text == admission_scripts.SPLIT_CALLS:
                calls[0] += 1
                if calls[0] > 1:  # the money call went through; the channel's and the undo do not
                    raise RedisConnectionError("Connection reset by peer")
            return script(keys=keys, args=args)
        return run

    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    gate = Gate(redis_client, HealthPolicy(), lease_seconds=600, clock=clock, register=register, split=True)
    journal = SettleJournal(tmp_path / "journal")
    charges = Charges(gate, journal, Replayer(redis_client.register_script, Quota(redis_client).release), RetryBudget())
    gate.strand = charges.abandon
    claim = idempotency.claim_of({"HTTP_IDEMPOTENCY_KEY": "k-cut", "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions"},
                                 ACCOUNT, KEY, b"{}", 60)
    one_at_a_time = (Scope(f"k:{KEY}", Limits(concurrency=1)),)
    plan = plan_of(channel(1, limits=Limits(concurrency=5)))
    with pytest.raises(RedisConnectionError, match="between the calls"):
        gate.admit(MoneyHold("req_cut", ACCOUNT, KEY, 300, None, 2e9), one_at_a_time, plan, claim)
    key_slot, channel_slot = redis_keys.lease_key(redis_keys.SHARED, f"k:{KEY}"), redis_keys.lease_key(redis_keys.channel_prefix(1), "c:1")
    assert Quota(redis_client).account(ACCOUNT) == (1_000_000, 300)
    assert redis_client.hget(claim.redis_key, "state") == b"running"
    assert redis_client.zrange(key_slot, 0, -1) == [b"req_cut"]  # the key's one slot, taken by the money call
    assert [decode_line(line) for line in journal.path.read_bytes().splitlines()] == [
        Abandoned("req_cut", ACCOUNT, claim.redis_key, (key_slot, channel_slot))]
    assert charges.replay_own() == 1  # Redis answers again
    assert Quota(redis_client).account(ACCOUNT) == (1_000_000, 0)
    assert not redis_client.exists(claim.redis_key)
    assert redis_client.zcard(key_slot) == 0  # the key may run a request again now, not after the lease


def counting_gate(redis_client, clock, stop_on: int | None = None):
    """A split gate whose calls are counted (and the call of body `stop_on`, if given, stopped as a
    killed greenlet is: GreenletExit raised in place of its reply)."""
    from gevent import GreenletExit

    calls = []

    def register(text):
        script = redis_client.register_script(text)

        def run(keys=(), args=()):
            calls.append(int(args[3]))  # one call per batch here: the count, its key and argument counts, its body
            if int(args[3]) == stop_on:
                raise GreenletExit()
            return script(keys=keys, args=args)
        return run

    return Gate(redis_client, HealthPolicy(), lease_seconds=600, clock=clock, register=register, split=True), calls


def test_split_a_failure_on_a_channel_ejected_already_keeps_the_panic(redis_client, clock, health):
    """In panic the relay sends requests to ejected channels; their failures are not counted (the
    channel is ejected already), and must not make the relay forget the ejection: the next request
    judges the panic at once, in one channel call, not after walking into the ejection again."""
    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    gate, calls = counting_gate(redis_client, clock)
    for cid in (1, 2):
        eject_channel(health, cid)
    plan = plan_of(channel(1), channel(2), channel(3))
    admission = admit(gate, plan)
    assert admission.panic and admission.route.channel.id == 1
    failed = Outcome(Effect.FAILURE, 1, 10, kind="transient", message="500")
    nxt, _, record = gate.failover(admission, failed, remaining_routes(plan, admission.tried, {1}))
    assert record[0] == "failure" and record[2] == 0 and nxt is not None  # not counted: ejected already
    settle(gate, admission)
    calls.clear()
    second = admit(gate, plan)
    assert second.panic and second.route.channel.id == 1
    assert calls == [admission_scripts.ADMIT_MONEY_CALL, admission_scripts.CHANNEL_PICK_CALL]


def test_split_a_greenlet_stopped_as_its_queue_ticket_leaves_holds_nothing(redis_client, clock):
    """The head of a capacity queue has taken its route and leaves the queue by one more call; a
    greenlet killed during that call never gets its admission, so the admission is undone: no money
    held, no claim left running, the user's limit given back, and the kill goes on up."""
    from gevent import GreenletExit

    from relay.capacity_queue import CapacityQueue, spot_for

    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    gate, calls = counting_gate(redis_client, clock, stop_on=admission_scripts.QUEUE_SERVED_CALL)
    plan = plan_of(channel(1))
    spot = spot_for("m", plan.channels)
    now = clock()
    queue = CapacityQueue(redis_client.register_script, clock=clock)
    assert queue._join(keys=list(spot.keys), args=[now, "req_head", now + 3, 0, ACCOUNT, KEY, 10])[0] == b"in"
    claim = idempotency.claim_of({"HTTP_IDEMPOTENCY_KEY": "k-head", "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions"},
                                 ACCOUNT, KEY, b"{}", 60)
    scopes = (Scope("u:3", Limits(concurrency=1)),)
    with pytest.raises(GreenletExit):
        gate.admit(MoneyHold("req_head", ACCOUNT, KEY, 300, None, 2e9), scopes, plan, claim,
                   queue=type(spot)(spot.keys, "req_head"))
    c = admission_scripts
    assert calls == [c.ADMIT_MONEY_CALL, c.SCOPES_TAKE_CALL, c.QUEUE_GATE_CALL, c.CHANNEL_PICK_CALL, c.QUEUE_SERVED_CALL,
                     c.ADMIT_UNDO_CALL, c.SCOPES_UNDO_CALL]
    assert Quota(redis_client).account(ACCOUNT) == (1_000_000, 0)
    assert not redis_client.exists(claim.redis_key)
    assert redis_client.zcard(Scope("u:3", Limits(concurrency=1)).keys(clock())[0]) == 0


def test_split_a_relay_that_found_the_queue_empty_skips_its_gate_for_a_head_poll(redis_client, clock):
    """Split, a capacity queue's gate is a call of its own (groups queue by default): a relay that
    found the queue empty lets newcomers skip it for QUEUE_QUIET_SECONDS, then looks again; once a
    request finds every route full (it may join the queue) newcomers look at once."""
    from relay.admission import QUEUE_QUIET_SECONDS
    from relay.capacity_queue import Queued, spot_for

    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    gate, calls = counting_gate(redis_client, clock)
    c = admission_scripts
    plan = plan_of(channel(1, limits=Limits(concurrency=2)))
    spot = spot_for("m", plan.channels)

    def admitted():
        calls.clear()
        gate.admit(MoneyHold(f"req_{next(_ids)}", ACCOUNT, KEY, 100, None, 2e9), (), plan, queue=spot)
        return list(calls)

    assert admitted() == [c.ADMIT_MONEY_CALL, c.QUEUE_GATE_CALL, c.CHANNEL_PICK_CALL]
    clock.advance(QUEUE_QUIET_SECONDS / 2)
    assert admitted() == [c.ADMIT_MONEY_CALL, c.CHANNEL_PICK_CALL]  # quiet: no gate
    with pytest.raises(NoRoute):  # full (concurrency 2): it may join the queue
        admitted()
    redis_client.zadd(spot.keys[0], {"someone": 1})
    redis_client.zadd(spot.keys[1], {"someone": clock() + 3})
    calls.clear()
    with pytest.raises(Queued):  # the next newcomer looks at once, and finds a waiter
        gate.admit(MoneyHold("req_late", ACCOUNT, KEY, 100, None, 2e9), (), plan, queue=spot)
    assert calls == [c.ADMIT_MONEY_CALL, c.QUEUE_GATE_CALL, c.ADMIT_UNDO_CALL]
