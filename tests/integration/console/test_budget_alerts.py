"""Budget alerts: a key's daily and monthly budgets and a member's monthly allowance alert at 80, 90
and 100 % — email and the account's signed webhook — each threshold once per period, from the live
windows the relay's settle script keeps."""
from __future__ import annotations

import json
import time

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import BudgetAlert
from controlplane.runtime import runtime
from controlplane.services import alerts as alert_settings, billing, keys, organisations
from relay.quota import Budgets
from relay.usage import UsageEvent
from tests import factories
from workers import budget_alerts

from .conftest import organisation, person
from .test_alerts_and_mail import inbox, receiver  # noqa: F401 - fixtures

DAY = 86_400


def spend(key, cost: int, now: float, allowance: int | None = None) -> None:
    """Charge a key as the relay does: a hold on its windows, then the settle."""
    quota = runtime().quota
    rid = f"budget-{time.monotonic_ns()}"
    hold = quota.hold(rid, key.account_id, key.id, cost, None, now + 60, Budgets(key.daily_budget, key.monthly_budget, allowance),
                      key.user_id, now)
    quota.settle(hold, cost, UsageEvent(request_id=rid, started_at=now, finished_at=now, endpoint="x", status=200).encode())


def test_a_daily_budget_alerts_at_each_threshold_once_per_day(app, inbox):
    ana = person("ana@example.com", usd="10")
    key, _ = keys.create_key(factories.ACTOR, ana, "ci", daily_budget_usd="1")
    now = time.time()
    spend(key, 700_000, now)
    assert budget_alerts.check_budgets(now) == 0  # 70 %
    spend(key, 150_000, now)
    assert budget_alerts.check_budgets(now) == 1  # 85 %: the 80 % alert
    assert budget_alerts.check_budgets(now) == 0  # not twice
    spend(key, 150_000, now)
    assert budget_alerts.check_budgets(now) == 1  # 100 %: 90 and 100 claimed, one message
    assert [m["Subject"] for m in inbox.messages] == [f"Budget 80 % used: the daily budget of key {key.prefix}",
                                                      f"Budget 100 % used: the daily budget of key {key.prefix}"]
    assert inbox.messages[0]["To"] == "ana@example.com" and "$0.85" in inbox.messages[0].get_payload()
    assert sorted(db.session.scalars(select(BudgetAlert.percent))) == [80, 90, 100]
    tomorrow = now + DAY
    spend(key, 850_000, tomorrow)
    assert budget_alerts.check_budgets(tomorrow) == 1  # a new day, a new period


def test_a_members_allowance_alerts_the_member_and_the_owners_with_the_webhook(app, inbox, receiver):
    owner, member = person("owner@example.com"), person("member@example.com")
    org = organisation(owner)
    billing.topup(factories.ACTOR, org, "10", "org funds")
    by = organisations.membership(org.id, owner.id)
    _, token = organisations.invite(factories.ACTOR, by, None, "member")
    joined = organisations.accept(factories.ACTOR, member, organisations.open_invitation(token))
    organisations.set_allowance(factories.ACTOR, by, joined.id, "2")
    alert_settings.save(factories.ACTOR, org, None, True, receiver.origin + "/hook")
    key, _ = keys.create_key(factories.ACTOR, member, "laptop", account_id=org.id)
    now = time.time()
    spend(key, 1_900_000, now, allowance=2_000_000)
    assert budget_alerts.check_budgets(now) == 1
    assert sorted(m["To"] for m in inbox.messages) == ["member@example.com", "owner@example.com"]
    hook = json.loads(receiver.requests[0]["body"])
    assert hook["event"] == "budget.threshold"
    assert (hook["data"]["percent"], hook["data"]["spent_micro_usd"], hook["data"]["budget_micro_usd"]) == (90, 1_900_000, 2_000_000)
    assert receiver.requests[0]["headers"]["X-Switchboard-Signature"].startswith("sha256=")


def test_email_off_in_the_alert_settings_means_webhook_only(app, inbox, receiver):
    ana = person("ana@example.com", usd="10")
    alert_settings.save(factories.ACTOR, ana.account, None, False, receiver.origin + "/hook")
    key, _ = keys.create_key(factories.ACTOR, ana, "ci", monthly_budget_usd="1")
    now = time.time()
    spend(key, 1_000_000, now)
    assert budget_alerts.check_budgets(now) == 1
    assert inbox.messages == [] and len(receiver.requests) == 1


def test_thresholds_are_integer_arithmetic():
    assert budget_alerts.crossed(799_999, 1_000_000) == []
    assert budget_alerts.crossed(800_000, 1_000_000) == [80]
    assert budget_alerts.crossed(3, 3) == [80, 90, 100]
    assert budget_alerts.crossed(5, 0) == []
