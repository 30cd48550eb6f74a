"""What a caller can ask about its own key, answered by the relay from Redis (no SQL here).

- `GET /v1/generation?id=REQ`: one request's tokens, cost, latency and status (relay/generation.py
  keeps the record for `generation_ttl_seconds`); only the key that made it may read it, every
  other key gets the same 404 as for an unknown id.
- `GET /v1/key` (and OpenRouter's older `/v1/auth/key`): limit, spend, what is left, budgets and rate
  limits, live — the same figures the hold script checks.
- `GET /v1/dashboard/billing/subscription` and `/usage`: the legacy OpenAI billing endpoints chat
  front-ends read to show a balance, in the shape one-api/new-api answer them.

Each is one Redis round trip after the usual authentication (bans, IP allow-lists and expiry apply).
Money is reported in USD (floats, as OpenRouter and OpenAI do) and as exact integer µ$.
"""
from __future__ import annotations

import calendar
import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs

import orjson

from relay import quota
from relay.context import RequestContext, Response, json_response
from relay.errors import RelayError, bad_request
from relay.generation import GenerationRecord
from relay.redis_keys import generation_key
from relay.keys import KeyView
from relay.snapshot import GroupView, Limits, Snapshot

if TYPE_CHECKING:
    from redis import Redis

GENERATION = "/v1/generation"
KEY_PATHS = ("/v1/key", "/v1/auth/key")
SUBSCRIPTION = "/v1/dashboard/billing/subscription"
USAGE = "/v1/dashboard/billing/usage"
PATHS = frozenset({GENERATION, *KEY_PATHS, SUBSCRIPTION, USAGE})

MAX_USAGE_DAYS = 100  # OpenAI's limit on the old usage endpoint; the relay keeps day windows that long
MAX_ID_LENGTH = 64


def usd(micro: int) -> float:
    return micro / 1_000_000


def _int(value: Any) -> int:
    return int(value or 0)


@dataclass(frozen=True, slots=True)
class Window:
    """One spend window: its limit (None: unlimited) and what was spent and is held in it."""

    limit: int | None
    spent: int
    held: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.spent - self.held)

    def to_api(self) -> dict[str, Any] | None:
        if self.limit is None:
            return None
        return {"limit": usd(self.limit), "spent": usd(self.spent), "remaining": usd(self.remaining or 0),
                "limit_micro_usd": self.limit, "spent_micro_usd": self.spent, "remaining_micro_usd": self.remaining}


@dataclass(frozen=True, slots=True)
class KeyStanding:
    """A key's money as Redis has it right now."""

    balance: int  # the account's balance less its open holds
    key: Window  # the key's credit limit against its all-time spend
    day: Window
    week_spent: int
    month: Window
    member: Window  # the key's user's allowance in an organisation, this month

    @property
    def remaining(self) -> int:
        """What the next request may spend: the tightest of every limit the hold checks."""
        found = [self.balance] + [w.remaining for w in (self.key, self.day, self.month, self.member) if w.remaining is not None]
        return max(0, min(found))


def _iso(epoch: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch is not None else None


def _limits(limits: Limits) -> dict[str, Any] | None:
    return {"rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.concurrency} if limits.any else None


class CustomerApi:
    def __init__(self, redis: Redis[bytes], authenticate: Callable[[RequestContext, dict[str, Any], Snapshot, float], KeyView]) -> None:
        """`authenticate(ctx, environ, snapshot, now) -> KeyView` is the pipeline's."""
        self.redis = redis
        self.authenticate = authenticate

    def handle(self, ctx: RequestContext, environ: dict[str, Any], path: str, snap: Snapshot) -> Response:
        now = time.time()
        key = self.authenticate(ctx, environ, snap, now)
        try:
            query = parse_qs(environ.get("QUERY_STRING") or "", max_num_fields=8)
        except ValueError:
            raise bad_request("Too many query parameters.") from None
        if path == GENERATION:
            body = self.generation(key, query)
        elif path == SUBSCRIPTION:
            body = self.subscription(key, now)
        elif path == USAGE:
            body = self.usage(key, query, now)
        else:
            body = self.key_info(key, snap.groups.get(key.group), key.user_limits if key.user_id is not None else None, now)
        return json_response(200, orjson.dumps(body))

    # --- GET /v1/generation ---------------------------------------------------------------------
    def generation(self, key: KeyView, query: dict[str, Any]) -> dict[str, Any]:
        request_id = (query.get("id") or [""])[0]
        if not request_id:
            raise bad_request("The query parameter 'id' is required.", param="id", code="missing_required_parameter")
        raw = self.redis.get(generation_key(key.account_id, request_id)) if len(request_id) <= MAX_ID_LENGTH else None
        record = GenerationRecord.decode(raw) if raw else None
        if record is None or record.key_id != key.id:
            raise RelayError(404, "generation_not_found", f"No request '{request_id[:MAX_ID_LENGTH]}' made with this key is known; "
                             "records are kept for a limited time.", param="id")
        return {"data": record.to_api()}

    # --- GET /v1/key ------------------------------------------------------------------------------
    def standing(self, key: KeyView, now: float) -> KeyStanding:
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        week = [today - dt.timedelta(days=n) for n in range(today.weekday() + 1)]  # Monday to today (UTC)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(quota.account_key(key.account_id), "bal", "held")
        pipe.hmget(quota.api_key_key(key.account_id, key.id), "spent", "held")
        pipe.hmget(quota.key_day_key(key.account_id, key.id, now), "spent", "held")
        pipe.hmget(quota.key_month_key(key.account_id, key.id, now), "spent", "held")
        pipe.hmget(quota.member_month_key(key.account_id, key.user_id, now), "spent", "held")
        for day in week:
            pipe.hget(_day_window(key, day), "spent")
        account, spent, day, month, member, *days = pipe.execute()
        return KeyStanding(
            balance=_int(account[0]) - _int(account[1]),
            key=Window(key.credit_limit, _int(spent[0]), _int(spent[1])),
            day=Window(key.daily_budget, _int(day[0]), _int(day[1])),
            week_spent=sum(_int(d) for d in days),
            month=Window(key.monthly_budget, _int(month[0]), _int(month[1])),
            member=Window(key.member_allowance, _int(member[0]), _int(member[1])),
        )

    def key_info(self, key: KeyView, group: GroupView | None, user_limits: Limits | None, now: float) -> dict[str, Any]:
        s = self.standing(key, now)
        rpm = key.limits.rpm
        return {"data": {
            "label": key.prefix,
            "limit": usd(key.credit_limit) if key.credit_limit is not None else None,
            "limit_remaining": usd(s.key.remaining) if s.key.remaining is not None else None,
            "limit_reset": None,
            "usage": usd(s.key.spent),
            "usage_daily": usd(s.day.spent),
            "usage_weekly": usd(s.week_spent),
            "usage_monthly": usd(s.month.spent),
            "is_free_tier": False,
            "expires_at": _iso(key.expires_at),
            "balance": usd(s.balance),
            "remaining": usd(s.remaining),
            "micro_usd": {"limit": key.credit_limit, "limit_remaining": s.key.remaining, "usage": s.key.spent, "usage_daily": s.day.spent,
                          "usage_weekly": s.week_spent, "usage_monthly": s.month.spent, "held": s.key.held, "balance": s.balance,
                          "remaining": s.remaining},
            "budgets": {"daily": s.day.to_api(), "monthly": s.month.to_api(), "member_monthly": s.member.to_api()},
            "rate_limit": {"requests": rpm, "interval": "1m"} if rpm else None,
            "rate_limits": {"key": _limits(key.limits), "user": _limits(user_limits) if user_limits else None,
                            "group": _limits(group.limits) if group is not None else None},
        }}

    # --- the legacy OpenAI billing endpoints ------------------------------------------------------
    def subscription(self, key: KeyView, now: float) -> dict[str, Any]:
        """`hard_limit_usd` is this month's spend plus what is left, so the sum front-ends compute
        (hard limit − this month's usage, the range NextChat and its forks ask for) is what is left."""
        s = self.standing(key, now)
        total = usd(s.month.spent + s.remaining)
        return {"object": "billing_subscription", "has_payment_method": True, "soft_limit_usd": total, "hard_limit_usd": total,
                "system_hard_limit_usd": total, "access_until": int(key.expires_at or 0)}

    def usage(self, key: KeyView, query: dict[str, Any], now: float) -> dict[str, Any]:
        """The key's spend from start_date up to end_date (exclusive, as OpenAI's was), in cents."""
        start = _date(query, "start_date")
        end = _date(query, "end_date")
        if end <= start:
            raise bad_request("'end_date' must be after 'start_date'.", param="end_date")
        if (end - start).days > MAX_USAGE_DAYS:
            raise bad_request(f"The usage range may span at most {MAX_USAGE_DAYS} days.", param="end_date")
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        days = [start + dt.timedelta(days=n) for n in range((min(end, today + dt.timedelta(days=1)) - start).days)]
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hget(_day_window(key, day), "spent")
        spent = [_int(v) for v in pipe.execute()] if days else []
        daily = [{"timestamp": int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()),
                  "line_items": [{"name": "usage", "cost": micro / 10_000}]} for d, micro in zip(days, spent, strict=True) if micro]
        total = sum(spent)
        return {"object": "list", "daily_costs": daily, "total_usage": total / 10_000, "total_usage_micro_usd": total}


def _day_window(key: KeyView, day: dt.date) -> str:
    return quota.key_day_key(key.account_id, key.id, calendar.timegm(day.timetuple()))


def _date(query: dict[str, Any], name: str) -> dt.date:
    raw = (query.get(name) or [""])[0]
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise bad_request(f"'{name}' must be a date as YYYY-MM-DD.", param=name) from None
