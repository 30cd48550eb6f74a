"""Spend windows (a key's daily / monthly budget, a member's monthly allowance) as the control
plane sees them: live figures from Redis for the consoles, and seeding Redis from the SQL rollups
after a Redis loss so budgets keep holding. The relay enforces them (relay/quota.py)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import func, select

from controlplane.extensions import db
from controlplane.models import UsageRollup
from controlplane.runtime import runtime
from relay import quota as q


def day_start(now: float) -> datetime:
    moment = datetime.fromtimestamp(now, tz=timezone.utc)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: float) -> datetime:
    return day_start(now).replace(day=1)


def _spend_by(column, where, since: datetime) -> dict:
    query = select(column, func.coalesce(func.sum(UsageRollup.cost), 0)).where(where, UsageRollup.bucket >= since).group_by(column)
    return {k: int(v) for k, v in db.session.execute(query).all()}


def seed_windows_calls(pipe, keys: list, now: float | None = None) -> None:
    """Queue, on `pipe`, the period's SQL spend of every key with a budget and every member with an
    allowance among `keys` (≤ one chunk of key views) where Redis has none (a fresh Redis); live
    figures are never overwritten. Queries are bounded by the chunk."""
    now = time.time() if now is None else now
    daily = [k for k in keys if k.daily_budget is not None]
    monthly = [k for k in keys if k.monthly_budget is not None]
    members = {(k.account_id, k.user_id) for k in keys if k.member_allowance is not None}
    seeds: dict[str, int] = {}
    if daily:
        spent = _spend_by(UsageRollup.api_key_id, UsageRollup.api_key_id.in_([k.id for k in daily]), day_start(now))
        seeds.update({q.key_day_key(k.account_id, k.id, now): spent.get(k.id, 0) for k in daily})
    if monthly:
        spent = _spend_by(UsageRollup.api_key_id, UsageRollup.api_key_id.in_([k.id for k in monthly]), month_start(now))
        seeds.update({q.key_month_key(k.account_id, k.id, now): spent.get(k.id, 0) for k in monthly})
    if members:
        query = (select(UsageRollup.account_id, UsageRollup.user_id, func.coalesce(func.sum(UsageRollup.cost), 0))
                 .where(UsageRollup.account_id.in_({a for a, _ in members}), UsageRollup.user_id.in_({u or 0 for _, u in members}),
                        UsageRollup.bucket >= month_start(now))
                 .group_by(UsageRollup.account_id, UsageRollup.user_id))
        spent_by_member = {(a, u): int(v) for a, u, v in db.session.execute(query).all()}
        seeds.update({q.member_month_key(a, u, now): spent_by_member.get((a, u or 0), 0) for a, u in members})
    for name, spent in seeds.items():
        pipe.hsetnx(name, "spent", spent)
        pipe.expire(name, q.DAY_TTL_SECONDS if ":d:" in name else q.MONTH_TTL_SECONDS)


def key_windows(account_id: int, key_id: int, now: float | None = None) -> dict[str, tuple[int, int]]:
    """Live (spent, held) of a key today and this month."""
    now = time.time() if now is None else now
    quota = runtime().quota
    return {"day": quota.window(q.key_day_key(account_id, key_id, now)), "month": quota.window(q.key_month_key(account_id, key_id, now))}


def member_window(account_id: int, user_id: int, now: float | None = None) -> tuple[int, int]:
    """Live (spent, held) of a member's keys in an organisation this month."""
    now = time.time() if now is None else now
    return runtime().quota.window(q.member_month_key(account_id, user_id, now))
