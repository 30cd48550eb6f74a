"""Spend windows in the hold and settle scripts (real Redis): a key's daily and monthly budgets and
a member's monthly allowance, counted per UTC day / month of the request's start. The clock is an
argument, so windows roll over without waiting."""
from __future__ import annotations

import calendar
import time

import pytest

from relay.quota import DAY_TTL_SECONDS, MONTH_TTL_SECONDS, Budgets, HoldRefused, Quota, key_day_key, key_month_key, member_month_key
from relay.usage import UsageEvent


def at(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


@pytest.fixture
def quota(redis_client):
    q = Quota(redis_client)
    q.seed_account(1, 1_000_000)
    return q


_n = iter(range(1_000_000))


def spend(quota, cost: int, now: float, budgets: Budgets, amount: int | None = None, key_id: int = 10, user_id: int = 7):
    """One request: hold `amount` (default: the cost), then settle `cost`."""
    rid = f"r{next(_n)}"
    hold = quota.hold(rid, 1, key_id, cost if amount is None else amount, None, now + 3600, budgets, user_id, now)
    event = UsageEvent(request_id=rid, started_at=now, finished_at=now, endpoint="/v1/chat/completions", status=200, cost=cost).encode()
    assert quota.settle(hold, cost, event)


def test_a_daily_budget_refuses_what_would_go_over_and_resets_at_midnight_utc(quota):
    daily = Budgets(daily=1_000)
    spend(quota, 600, at("2031-03-04 10:00"), daily)
    with pytest.raises(HoldRefused) as refused:
        spend(quota, 500, at("2031-03-04 23:59"), daily)
    assert refused.value.reason == "key_daily_budget" and refused.value.available == 400
    spend(quota, 400, at("2031-03-04 23:59"), daily)  # exactly the rest fits
    spend(quota, 900, at("2031-03-05 00:00"), daily)  # a new UTC day
    assert quota.window(key_day_key(1, 10, at("2031-03-04 12:00"))) == (1_000, 0)
    assert quota.window(key_day_key(1, 10, at("2031-03-05 12:00"))) == (900, 0)


def test_a_monthly_budget_resets_on_the_first(quota):
    monthly = Budgets(monthly=5_000)
    spend(quota, 4_000, at("2031-01-31 23:00"), monthly)
    with pytest.raises(HoldRefused) as refused:
        spend(quota, 1_001, at("2031-01-31 23:30"), monthly)
    assert refused.value.reason == "key_monthly_budget"
    spend(quota, 5_000, at("2031-02-01 00:00"), monthly)
    assert quota.window(key_month_key(1, 10, at("2031-02-10 00:00"))) == (5_000, 0)


def test_holds_count_against_a_window_until_settled(quota):
    daily = Budgets(daily=1_000)
    now = at("2031-03-04 10:00")
    quota.hold("open", 1, 10, 700, None, now + 3600, daily, 7, now)
    with pytest.raises(HoldRefused) as refused:
        quota.hold("next", 1, 10, 400, None, now + 3600, daily, 7, now)
    assert refused.value.available == 300
    assert quota.window(key_day_key(1, 10, now)) == (0, 700)


def test_a_member_allowance_spans_all_of_the_members_keys(quota):
    allowance = Budgets(allowance=1_000)
    now = at("2031-06-15 09:00")
    spend(quota, 600, now, allowance, key_id=21)
    with pytest.raises(HoldRefused) as refused:
        spend(quota, 500, now, allowance, key_id=22)
    assert refused.value.reason == "member_allowance"
    spend(quota, 500, now, allowance, key_id=22, user_id=8)  # another member of the same account
    spend(quota, 1_000, at("2031-07-01 00:00"), allowance, key_id=22)  # next month
    assert quota.window(member_month_key(1, 7, now)) == (600, 0)


def test_spend_counts_in_every_window_even_without_a_budget(quota):
    """So a budget set later starts from what was really spent today."""
    now = at("2031-03-04 10:00")
    spend(quota, 300, now, Budgets())
    assert quota.window(key_day_key(1, 10, now)) == (300, 0)
    with pytest.raises(HoldRefused):
        spend(quota, 800, now, Budgets(daily=1_000))


def test_the_sweeper_releases_a_crashed_requests_window_holds(quota):
    now = at("2031-03-04 10:00")
    quota.hold("crashed", 1, 10, 700, None, time.time() - 1, Budgets(daily=1_000, allowance=5_000), 7, now)
    assert quota.release_expired(time.time()) == 1
    assert quota.window(key_day_key(1, 10, now)) == (0, 0)
    assert quota.window(member_month_key(1, 7, now)) == (0, 0)
    assert quota.account(1) == (1_000_000, 0)


def test_windows_expire_after_their_period(quota, redis_client):
    now = at("2031-03-04 10:00")
    spend(quota, 100, now, Budgets(daily=1_000, monthly=1_000))
    # day windows stay 100 days for the billing usage endpoint (relay/customer_api.py)
    assert 100 * 86_400 < redis_client.ttl(key_day_key(1, 10, now)) <= DAY_TTL_SECONDS
    assert 31 * 86_400 < redis_client.ttl(key_month_key(1, 10, now)) <= MONTH_TTL_SECONDS


def test_a_window_first_written_by_a_settle_gets_its_lifetime_and_keeps_it(quota, redis_client):
    """With no budget the hold reserves in no window: the settle's first spend creates each one
    and gives it its lifetime; later spends leave the lifetime alone."""
    now = at("2031-03-04 10:00")
    spend(quota, 100, now, Budgets())
    for name, ttl in ((key_day_key(1, 10, now), DAY_TTL_SECONDS), (key_month_key(1, 10, now), MONTH_TTL_SECONDS),
                      (member_month_key(1, 7, now), MONTH_TTL_SECONDS)):
        assert ttl - 60 < redis_client.ttl(name) <= ttl
        redis_client.expire(name, 1_000)
    spend(quota, 50, now, Budgets())
    assert quota.window(key_day_key(1, 10, now)) == (150, 0)
    assert 900 < redis_client.ttl(key_day_key(1, 10, now)) <= 1_000


def test_seeding_never_overwrites_a_live_window(quota):
    now = at("2031-03-04 10:00")
    spend(quota, 300, now, Budgets())
    quota.seed_windows({key_day_key(1, 10, now): 5, key_day_key(1, 99, now): 42})
    assert quota.window(key_day_key(1, 10, now)) == (300, 0)
    assert quota.window(key_day_key(1, 99, now)) == (42, 0)
