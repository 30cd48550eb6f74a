"""Envoy-style ejection in Redis, timed by an injected clock: consecutive failures eject, repeat
ejections last longer up to a cap, healthy time decays them; 429s cool a key, dead keys are reported."""
from __future__ import annotations

import pytest

from relay.health import REPORTS_STREAM, Effect, Health, HealthPolicy, Outcome
from tests.fakes.clock import Clock


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def health(redis_client, clock):
    return Health(redis_client, HealthPolicy(), clock)


def fail(health, channel=1, key=10, network=False):
    return health.record(Outcome(Effect.FAILURE, channel, key, network=network))


def succeed(health, channel=1, key=10):
    return health.record(Outcome(Effect.OK, channel, key))


def test_four_failures_a_success_and_four_more_eject_nothing(health, clock):
    for _ in range(4):
        fail(health)
    succeed(health)
    for _ in range(4):
        fail(health)
    assert not health.key(1, 10).ejected(clock.now)
    assert not health.channel(1).ejected(clock.now)
    assert health.key(1, 10).failures == 4


def test_five_in_a_row_eject_key_and_channel_for_the_base_time(health, clock):
    for _ in range(4):
        assert fail(health) == ["failure", 0, 0]
    assert fail(health) == ["failure", clock.now + 30, clock.now + 30]
    assert health.key(1, 10).ejected(clock.now + 29.9)
    assert not health.key(1, 10).ejected(clock.now + 30)
    assert health.channel(1).ejections == 1


def test_failures_while_ejected_are_not_counted(health, clock):
    for _ in range(5):
        fail(health)
    for _ in range(10):  # requests that were in flight when it was ejected
        fail(health)
    clock.advance(30)
    assert health.key(1, 10).failures == 0 and not health.key(1, 10).ejected(clock.now)


def eject(health, clock) -> float:
    for _ in range(5):
        result = fail(health)
    until = result[1]
    assert until > clock.now
    return until - clock.now


def test_failing_again_after_an_ejection_doubles_it_and_the_cap_holds(health, clock):
    durations = []
    for _ in range(12):
        durations.append(eject(health, clock))
        clock.advance(durations[-1])  # back in service, and failing straight away
    assert durations[:3] == [30, 60, 90]
    assert max(durations) == 300 and durations[-1] == 300


def test_healthy_time_decays_the_multiplier(health, clock):
    for _ in range(3):
        clock.advance(eject(health, clock))  # 30, 60, 90: multiplier 3
    clock.advance(2 * 30)  # two healthy base intervals take two off
    assert eject(health, clock) == 60  # multiplier 1 + 1
    clock.advance(60 + 10 * 30)
    assert eject(health, clock) == 30  # fully decayed


def test_a_429_cools_the_key_down_honouring_retry_after(health, clock):
    health.record(Outcome(Effect.COOLDOWN, 1, 10, retry_after=7))
    assert health.key(1, 10).cooling(clock.now + 6.9) and not health.key(1, 10).cooling(clock.now + 7)
    health.record(Outcome(Effect.COOLDOWN, 1, 11))  # no Retry-After: the default
    assert health.key(1, 11).cooling_until == clock.now + 5
    health.record(Outcome(Effect.COOLDOWN, 1, 12, retry_after=86_400))  # not believed beyond the cap
    assert health.key(1, 12).cooling_until == clock.now + 600
    assert not health.channel(1).ejected(clock.now) and health.channel(1).failures == 0


def test_a_dead_key_is_marked_and_reported_once(health, redis_client, clock):
    dead = Outcome(Effect.DEAD_KEY, 1, 10, key_since=clock.now - 100, kind="auth", message="Incorrect API key provided")
    assert health.record(dead) == ["dead", 1, 0]
    assert health.record(dead) == ["dead", 0, 0]  # a second request that saw it: no second report
    reports = redis_client.xrange(REPORTS_STREAM)
    assert len(reports) == 1
    fields = reports[0][1]
    assert fields[b"key"] == b"10" and fields[b"kind"] == b"auth" and b"Incorrect API key" in fields[b"message"]
    assert health.key(1, 10).dead_since == clock.now


def test_a_key_re_enabled_after_its_dead_mark_is_reported_again_when_it_dies_again(health, redis_client, clock):
    health.record(Outcome(Effect.DEAD_KEY, 1, 10, key_since=clock.now - 100, kind="auth"))
    clock.advance(60)
    assert health.record(Outcome(Effect.DEAD_KEY, 1, 10, key_since=clock.now - 1, kind="auth")) == ["dead", 1, 0]
    assert redis_client.xlen(REPORTS_STREAM) == 2


def test_every_channel_failing_at_once_with_no_answer_is_not_held_against_them(health, clock):
    """Our own network is down: no channel answers, nothing succeeds anywhere."""
    for _ in range(6):
        fail(health, channel=1, key=10, network=True)
        fail(health, channel=2, key=20, network=True)
    assert not health.channel(1).ejected(clock.now) and not health.channel(2).ejected(clock.now)


def test_one_channel_unreachable_while_others_succeed_is_ejected(health, clock):
    for _ in range(5):
        succeed(health, channel=2, key=20)
        fail(health, channel=1, key=10, network=True)
        fail(health, channel=3, key=30, network=True)
    assert health.channel(1).ejected(clock.now) and health.channel(3).ejected(clock.now)
    assert not health.channel(2).ejected(clock.now)


def test_answered_5xx_count_even_when_everything_fails(health, clock):
    for _ in range(5):
        fail(health, channel=1, key=10)
        fail(health, channel=2, key=20)
    assert health.channel(1).ejected(clock.now) and health.channel(2).ejected(clock.now)
