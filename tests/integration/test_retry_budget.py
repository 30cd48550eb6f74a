"""The retry budget every relay process shares through Redis: two budgets on one real Redis stand
for two relay processes."""
from __future__ import annotations

from redis.crc import key_slot

from relay import redis_keys
from relay.retry_budget import LEASE_SECONDS, SharedRetryBudget
from tests.fakes.clock import Clock
from tests.integration.test_script_keys import Monitor, undeclared


def budgets(redis_client, clock, percent=20.0, minimum=3):
    return (SharedRetryBudget(redis_client.register_script, percent, minimum, clock, name="relay-a"),
            SharedRetryBudget(redis_client.register_script, percent, minimum, clock, name="relay-b"))


def test_retries_in_flight_are_counted_across_processes(redis_client):
    a, b = budgets(redis_client, Clock())
    held = [a.try_retry(), a.try_retry(), b.try_retry()]
    assert None not in held
    assert (a.try_retry(), b.try_retry()) == (None, None)  # three in flight across both: the minimum
    a.end_retry(held[0])
    assert b.try_retry() is not None and a.try_retry() is None


def test_the_budget_grows_with_requests_in_flight_anywhere(redis_client):
    clock = Clock()
    a, b = budgets(redis_client, clock, minimum=1)
    for _ in range(50):
        a.begin_request()
    first = a.try_retry()  # tells Redis relay-a has 50 requests in flight: 20 % of them is 10
    assert first is not None
    taken = [b.try_retry() for _ in range(12)]
    assert sum(t is not None for t in taken) == 9
    for ticket in [first, *taken]:
        if ticket is not None:
            (a if ticket.startswith("relay-a") else b).end_retry(ticket)
    clock.advance(11)  # relay-a has not said how busy it is for longer than counts
    assert b.try_retry() is not None and b.try_retry() is None


def test_a_dead_processs_retry_slot_lapses_with_its_lease(redis_client):
    clock = Clock()
    a, b = budgets(redis_client, clock, minimum=1)
    assert a.try_retry() is not None  # and relay-a dies without giving it back
    assert b.try_retry() is None
    clock.advance(LEASE_SECONDS + 1)
    assert b.try_retry() is not None


def test_without_redis_the_processs_own_budget_decides(redis_client):
    import redis as redis_lib

    gone = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    budget = SharedRetryBudget(gone.register_script, 20.0, 1, Clock())
    ticket = budget.try_retry()
    assert ticket == "local" and budget.try_retry() is None
    budget.end_retry(ticket)
    assert budget.try_retry() == "local"


def test_the_budgets_scripts_touch_only_their_keys_in_one_slot(redis_slot, redis_client):
    assert key_slot(redis_keys.RETRY_INFLIGHT.encode()) == key_slot(redis_keys.RETRY_ACTIVE.encode())
    a, _ = budgets(redis_client, Clock())
    monitor = Monitor(redis_slot.url)
    try:
        a.end_retry(a.try_retry())
    finally:
        lines = monitor.stop(redis_client)
    scripts, found = undeclared(lines, redis_slot.index, redis_client)
    assert scripts >= 2 and found == []
