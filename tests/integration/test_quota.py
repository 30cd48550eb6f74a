"""Holds and settlement on a real Redis: atomic, exactly once, never below zero."""
from __future__ import annotations

import threading
import time

import pytest

from relay.redis_keys import holds_key
from relay.quota import Hold, HoldRefused, Quota, account_key, api_key_key, hold_key, hold_record
from relay.usage import USAGE_STREAMS, UsageEvent


@pytest.fixture
def quota(redis_client):
    return Quota(redis_client)


def quota_windows(key_id: int, account_id: int) -> tuple[str, str, str]:
    return hold_record("-", account_id, key_id, 0).windows


def event(rid: str, cost: int = 0) -> bytes:
    return UsageEvent(request_id=rid, started_at=0, finished_at=0, endpoint="/v1/chat/completions", status=200, cost=cost).encode()


def test_hold_then_settle_charges_the_actual_cost_and_releases_the_rest(quota):
    quota.seed_account(1, 1_000)
    hold = quota.hold("r1", 1, 10, 600, None, time.time() + 60)
    assert quota.account(1) == (1_000, 600)
    assert quota.settle(hold, 250, event("r1", 250))
    assert quota.account(1) == (750, 0)
    assert quota.key_spent(1, 10) == (250, 0)


def test_settle_is_idempotent(quota, redis_client):
    quota.seed_account(1, 1_000)
    hold = quota.hold("r1", 1, 10, 100, None, time.time() + 60)
    assert quota.settle(hold, 100, event("r1", 100))
    assert quota.settle(hold, 100, event("r1", 100)) is None
    assert quota.account(1) == (900, 0)
    assert redis_client.xlen(USAGE_STREAMS[0]) == 1


def test_a_hold_beyond_the_available_balance_is_refused(quota):
    quota.seed_account(1, 1_000)
    quota.hold("r1", 1, 10, 700, None, time.time() + 60)
    with pytest.raises(HoldRefused) as refused:
        quota.hold("r2", 1, 10, 400, None, time.time() + 60)
    assert refused.value.reason == "balance" and refused.value.available == 300


def test_an_unknown_account_has_nothing_to_spend(quota):
    with pytest.raises(HoldRefused):
        quota.hold("r1", 404, 1, 1, None, time.time() + 60)


def test_key_credit_limit_counts_spent_and_held(quota):
    quota.seed_account(1, 10_000)
    quota.seed_key_spent(1, 5, 800)
    quota.hold("r1", 1, 5, 150, 1_000, time.time() + 60)
    with pytest.raises(HoldRefused) as refused:
        quota.hold("r2", 1, 5, 100, 1_000, time.time() + 60)
    assert refused.value.reason == "key_limit" and refused.value.available == 50


def test_a_key_reserves_only_against_a_credit_limit_and_gets_exactly_that_back(quota, redis_client):
    quota.seed_account(1, 10_000)
    unlimited = quota.hold("r1", 1, 5, 300, None, time.time() + 60)
    limited = quota.hold("r2", 1, 6, 200, 5_000, time.time() + 60)
    quota.hold("r3", 1, 6, 100, 5_000, time.time() - 1)
    assert quota.account(1) == (10_000, 600)
    assert quota.key_spent(1, 5) == (0, 0)  # nothing to reserve against: its `held` is not kept
    assert quota.key_spent(1, 6) == (0, 300)
    assert redis_client.hget(hold_key(0, "r1"), "akey") is None  # the record names only what it reserved in
    assert quota.release_expired(time.time()) == 1
    assert quota.key_spent(1, 6) == (0, 200)
    assert quota.settle(unlimited, 250, event("r1", 250)) and quota.settle(limited, 150, event("r2", 150))
    assert quota.account(1) == (9_600, 0)
    assert quota.key_spent(1, 5) == (250, 0) and quota.key_spent(1, 6) == (150, 0)


def test_a_hold_recorded_before_keys_without_limits_stopped_reserving_is_released_in_full(quota, redis_client):
    """Earlier versions reserved on every key and named it in the record: such a hold, open across
    an upgrade, gives the key's `held` back when it is settled or swept."""
    quota.seed_account(1, 10_000)
    for rid, expires in (("old-settled", time.time() + 60), ("old-swept", time.time() - 1)):
        redis_client.hincrby(account_key(1), "held", 100)
        redis_client.hincrby(api_key_key(1, 5), "held", 100)
        redis_client.hset(hold_key(0, rid), mapping={"amt": 100, "acct": account_key(1), "akey": api_key_key(1, 5), "klim": -1})
        redis_client.zadd(holds_key(0), {rid: expires})
    assert quota.release_expired(time.time()) == 1
    assert quota.key_spent(1, 5) == (0, 100)
    assert quota.settle(Hold("old-settled", 1, 5, 100, quota_windows(5, 1)), 40, event("old-settled", 40))
    assert quota.account(1) == (9_960, 0) and quota.key_spent(1, 5) == (40, 0)


def test_expired_holds_are_released_by_the_sweeper(quota):
    quota.seed_account(1, 1_000)
    quota.hold("old", 1, 10, 400, None, time.time() - 1)
    quota.hold("new", 1, 10, 100, None, time.time() + 600)
    assert quota.release_expired(time.time()) == 1
    assert quota.account(1) == (1_000, 100)
    assert quota.open_holds() == 1


def test_a_free_requests_zero_hold_counts_as_released(quota):
    quota.seed_account(1, 1_000)
    quota.hold("free", 1, 10, 0, None, time.time() - 1)
    assert quota.release_expired(time.time()) == 1
    assert quota.open_holds() == 0 and quota.account(1) == (1_000, 0)


def test_one_sweep_releases_at_most_its_limit_and_the_next_goes_on(quota):
    quota.seed_account(1, 1_000)
    for n in range(3):
        quota.hold(f"old{n}", 1, 10, 100, None, time.time() - 1)
    assert quota.release_expired(time.time(), limit=2) == 2
    assert quota.release_expired(time.time(), limit=2) == 1
    assert quota.open_holds() == 0 and quota.account(1) == (1_000, 0)


def test_credit_seeds_an_account_redis_has_not_seen(quota):
    assert quota.credit(7, 500, sql_balance_after=1_500) == 1_500  # seeded from SQL, not incremented
    assert quota.credit(7, 500, sql_balance_after=2_000) == 2_000  # now an increment


def test_fifty_concurrent_requests_against_a_balance_for_exactly_seven(quota):
    """Each request holds 100 and costs 100: exactly seven fit; no hold is left open; the balance
    never dips below zero and the charges add up."""
    quota.seed_account(1, 700)
    admitted, refused, lowest = [], [], []
    barrier = threading.Barrier(50)

    def request(i: int):
        barrier.wait()
        try:
            hold = quota.hold(f"r{i}", 1, 10, 100, None, time.time() + 60)
        except HoldRefused:
            refused.append(i)
            return
        admitted.append(i)
        bal, held = quota.account(1)
        lowest.append(bal - held)
        time.sleep(0.01)
        quota.settle(hold, 100, event(f"r{i}", 100))

    threads = [threading.Thread(target=request, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 7 and len(refused) == 43
    assert min(lowest) >= 0
    assert quota.account(1) == (0, 0)
    assert quota.open_holds() == 0
