"""Budget alerts, run on a schedule: when a key's daily or monthly budget, or a member's monthly
allowance in an organisation, is 80, 90 or 100 % spent, the people concerned hear about it by email
and through the account's alert webhook — each threshold once per period.

A threshold is claimed in SQL (`budget_alerts`, unique per window, period and threshold) before
anything is sent, so two runs never send the same alert; a jump past several thresholds at once
claims them all and sends one message naming the highest. Spend is read from the live windows in
Redis the relay keeps (relay/quota.py), a chunk of windows per round trip.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from controlplane.extensions import db
from controlplane.models import AlertSetting, ApiKey, BudgetAlert, KeyStatus, Membership, User
from controlplane.notify import send_email, send_webhook
from controlplane.runtime import runtime
from relay import quota as q
from relay import redis_keys
from relay.pricing import usd_text
from workers.context import in_app_context
from workers.locks import Lock
from workers.mail import account_recipients

log = logging.getLogger(__name__)
THRESHOLDS = (80, 90, 100)  # percent of the budget
CHUNK = 1000
LOCK_LEASE = 300


@dataclass(frozen=True)
class Window:
    """One budget and the live window that counts against it."""

    account_id: int
    user_id: int | None
    subject: str  # key:<id>:day, key:<id>:month, member:<account>:<user>
    period: str  # the UTC day or month the window counts
    budget: int  # µ$
    redis_name: str
    what: str  # how people read it: "the daily budget of key sk-sb-ab12"


def crossed(spent: int, budget: int) -> list[int]:
    """The thresholds `spent` has reached (integer arithmetic: no rounding decides an alert)."""
    return [t for t in THRESHOLDS if budget > 0 and spent * 100 >= t * budget]


def _key_windows(now: float) -> Iterator[list[Window]]:
    day, month = _day(now), _month(now)
    last = 0
    while True:
        rows = db.session.execute(select(ApiKey.id, ApiKey.account_id, ApiKey.user_id, ApiKey.prefix, ApiKey.daily_budget, ApiKey.monthly_budget)
                                  .where(ApiKey.id > last, ApiKey.status == KeyStatus.ENABLED.value,
                                         or_(ApiKey.daily_budget.is_not(None), ApiKey.monthly_budget.is_not(None)))
                                  .order_by(ApiKey.id).limit(CHUNK)).all()
        if not rows:
            return
        last = rows[-1].id
        out = []
        for r in rows:
            if r.daily_budget is not None:
                out.append(Window(r.account_id, r.user_id, f"key:{r.id}:day", day, r.daily_budget, q.key_day_key(r.account_id, r.id, now),
                                  f"the daily budget of key {r.prefix}"))
            if r.monthly_budget is not None:
                out.append(Window(r.account_id, r.user_id, f"key:{r.id}:month", month, r.monthly_budget, q.key_month_key(r.account_id, r.id, now),
                                  f"the monthly budget of key {r.prefix}"))
        yield out


def _member_windows(now: float) -> Iterator[list[Window]]:
    month = _month(now)
    last = 0
    while True:
        rows = db.session.execute(select(Membership.id, Membership.account_id, Membership.user_id, Membership.monthly_allowance, User.email)
                                  .join(User, User.id == Membership.user_id)
                                  .where(Membership.id > last, Membership.monthly_allowance.is_not(None))
                                  .order_by(Membership.id).limit(CHUNK)).all()
        if not rows:
            return
        last = rows[-1].id
        yield [Window(r.account_id, r.user_id, f"member:{r.account_id}:{r.user_id}", month, r.monthly_allowance,
                      q.member_month_key(r.account_id, r.user_id, now), f"the monthly allowance of {r.email}") for r in rows]


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%d")


def _month(now: float) -> str:
    return datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m")


def _claim(window: Window, spent: int, percents: list[int]) -> BudgetAlert | None:
    """Claim the thresholds not claimed yet; returns the highest new one (None: nothing new)."""
    known = set(db.session.scalars(select(BudgetAlert.percent).where(BudgetAlert.subject == window.subject, BudgetAlert.period == window.period)))
    fresh = [p for p in percents if p not in known]
    if not fresh:
        return None
    rows = [BudgetAlert(account_id=window.account_id, subject=window.subject, period=window.period, percent=p, spent=spent, budget=window.budget)
            for p in fresh]
    try:
        with db.session.begin_nested():
            db.session.add_all(rows)
    except IntegrityError:  # another run claimed it a moment ago
        return None
    return rows[-1]


def _recipients(window: Window) -> list[str]:
    """The key's owner or the member, and who hears about the account's money (an organisation's
    owners and admins)."""
    people = list(db.session.scalars(select(User.email).where(User.id == window.user_id))) if window.user_id else []
    return list(dict.fromkeys(people + account_recipients(window.account_id)))


def _deliver(window: Window, alert: BudgetAlert) -> str:
    rt = runtime()
    setting = db.session.scalar(select(AlertSetting).where(AlertSetting.account_id == window.account_id))
    summary = (f"{usd_text(alert.spent)} of {window.what} ({usd_text(window.budget)}) is spent for {window.period}: {alert.percent} %."
               + (" Requests that would go over it are refused until the period ends or the budget is raised." if alert.percent >= 100 else ""))
    results = []
    if setting is None or setting.email:
        for address in _recipients(window):
            sent = send_email(rt.settings.smtp, address, f"Budget {alert.percent} % used: {window.what}", summary)
            results.append(f"email {address}: {'sent' if sent.ok else sent.detail}")
    if setting is not None and setting.webhook_url:
        payload = {"account_id": window.account_id, "subject": window.subject, "period": window.period, "percent": alert.percent,
                   "spent_micro_usd": alert.spent, "budget_micro_usd": window.budget}
        # A customer's URL: public addresses only, whatever the operator opened for upstreams.
        sent = send_webhook(setting.webhook_url, "budget.threshold", payload, egress=rt.egress(customer=True), secret=rt.settings.webhook_secret)
        results.append(f"webhook: {'sent' if sent.ok else sent.detail}")
    return "; ".join(results) or "nothing to send"


def _check(windows: list[Window]) -> int:
    redis = runtime().redis
    pipe = redis.pipeline(transaction=False)
    for window in windows:
        pipe.hget(window.redis_name, "spent")
    claimed = []
    for window, raw in zip(windows, pipe.execute(), strict=True):
        spent = int(raw or 0)
        percents = crossed(spent, window.budget)
        if percents:
            alert = _claim(window, spent, percents)
            if alert is not None:
                claimed.append((window, alert))
    db.session.commit()
    for window, alert in claimed:
        alert.result = _deliver(window, alert)[:2000]
        db.session.commit()
    return len(claimed)


@in_app_context
def check_budgets(now: float | None = None) -> int:
    """Returns how many alerts went out."""
    now = time.time() if now is None else now
    with Lock(runtime().redis, redis_keys.LOCK_BUDGET_ALERTS, LOCK_LEASE) as lock:
        if not lock.acquire():
            return 0
        sent = 0
        for windows in _key_windows(now):
            sent += _check(windows)
        for windows in _member_windows(now):
            sent += _check(windows)
        return sent
