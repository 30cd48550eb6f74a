"""Disruption credits on both SQL back ends: each account's credit is its usage of what the
disruption hit in the 30 days before it, scaled to the disruption's length; the batch posts once
(ledger entries, live balances, one audit entry), from the console after a preview and a
confirmation, or from the admin API."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import AuditEntry, DisruptionCredit, EntryKind, LedgerEntry
from controlplane.runtime import runtime
from controlplane.services import ServiceError, api_tokens, disruption
from relay.usage import UsageEvent
from tests import factories
from tests.console import person, post, sign_in, text
from workers.usage import write_batch

START = datetime(2026, 11, 20, 6, tzinfo=timezone.utc)
END = START + timedelta(hours=72)  # 3 days: a tenth of the 30-day look-back
_seq = itertools.count(1)


def used(user, cost: int, when: datetime, model: str = "gpt-4o", channel_id: int = 0) -> None:
    at = when.timestamp()
    write_batch([UsageEvent(request_id=f"req_dc_{next(_seq)}", started_at=at, finished_at=at + 1, endpoint="/v1/chat/completions", status=200,
                            account_id=user.account_id, user_id=user.id, model=model, channel_id=channel_id, cost=cost)])
    db.session.commit()


@pytest.fixture
def world(sql_app):
    channel = factories.channel("https://api.example.com/v1", models=("claude",), name="anthropic-eu")
    ana, bob, cy, dee = (factories.user(f"{n}@example.com") for n in ("ana", "bob", "cy", "dee"))
    used(ana, 2_000_000, START - timedelta(days=10))
    used(ana, 1_000_000, START - timedelta(days=29))  # both inside the 30 days before: $3.00
    used(bob, 1_500_000, START - timedelta(days=2), model="claude", channel_id=channel.id)  # hit through the channel
    used(cy, 9_000_000, START - timedelta(days=1), model="gpt-4o-mini")  # not hit
    used(dee, 5_000_000, START - timedelta(days=31))  # before the look-back
    used(dee, 5_000_000, START + timedelta(hours=1))  # during the disruption: not the basis
    return {"channel": channel, "ana": ana, "bob": bob, "cy": cy, "dee": dee}


def test_the_preview_is_pro_rata_over_what_the_disruption_hit(world):
    plan = disruption.preview(START, END, ["gpt-4o"], [world["channel"].id])
    assert [(line.account_id, line.usage, line.amount) for line in plan.lines] == [
        (world["ana"].account_id, 3_000_000, 300_000), (world["bob"].account_id, 1_500_000, 150_000)]
    assert plan.total == 450_000
    assert [line.account_id for line in disruption.preview(START, END, ["gpt-4o"]).lines] == [world["ana"].account_id]
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "goodwill")) == 0


def test_posting_credits_every_account_once(world):
    plan = disruption.preview(START, END, ["gpt-4o"], [world["channel"].id])
    batch = disruption.post(factories.ACTOR, plan, "gpt-4o outage, 20-23 November", expected_total=450_000)
    ana = world["ana"].account_id
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.account_id == ana, LedgerEntry.kind == EntryKind.GOODWILL.value))
    assert (entry.amount, entry.reference_id, entry.reason) == (300_000, batch.id, "gpt-4o outage, 20-23 November")
    assert ledger.stored_balance(ana) == ledger.sum_of_entries(ana) == 3_000_000 * -1 + 300_000
    assert runtime().quota.account(world["bob"].account_id)[0] == 150_000  # live balance credited (charges were never held here)
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "disruption.credit"))
    assert audit.after["total_micro_usd"] == 450_000 and audit.after["accounts"] == 2
    with pytest.raises(ServiceError) as again:
        disruption.post(factories.ACTOR, disruption.preview(START, END, ["gpt-4o"], [world["channel"].id]), "twice")
    assert again.value.status == 409
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "goodwill")) == 2


def test_what_may_not_be_credited_is_explained(world):
    cases = [((START, START + timedelta(hours=71), ["gpt-4o"], []), "72 hours"),
             ((START, datetime.now(timezone.utc) + timedelta(hours=1), ["gpt-4o"], []), "must be over"),
             ((START, END, [], []), "Choose the models or channels"),
             ((START, END, [], [999_999]), "No channel 999999"),
             ((START, END, ["x" * 201], []), "at most 200 characters")]
    for args, message in cases:
        with pytest.raises(ServiceError) as refused:
            disruption.preview(*args)
        assert message in refused.value.message, message
    plan = disruption.preview(START, END, ["gpt-4o"])
    with pytest.raises(ServiceError) as changed:
        disruption.post(factories.ACTOR, plan, "outage", expected_total=1)
    assert changed.value.status == 409 and "preview again" in changed.value.message
    with pytest.raises(ServiceError):
        disruption.post(factories.ACTOR, plan, "  ")
    assert db.session.scalar(select(DisruptionCredit.id)) is None


def test_the_console_previews_confirms_and_posts(world, sql_app):
    staff = sign_in(sql_app.test_client(), person("operator"))
    scope = {"starts_at": "2026-11-20T06:00", "ends_at": "2026-11-23T06:00", "models": "gpt-4o"}
    preview = text(staff.get("/admin/disruption-credits/", query_string={**scope, "preview": "1", "channel": str(world["channel"].id)}))
    assert "2 accounts" in preview and "$0.450000" in preview and "ana@example.com" in preview and "cy@example.com" not in preview
    short = staff.get("/admin/disruption-credits/", query_string={**scope, "ends_at": "2026-11-21T06:00", "preview": "1"})
    assert short.status_code == 400 and "72 hours" in text(short)
    form = {**scope, "channels": str(world["channel"].id), "total": "450000", "reason": "gpt-4o outage"}
    asked = post(staff, "/admin/disruption-credits/", form)
    assert "Credit $0.45 to 2 account(s)" in text(asked)
    assert db.session.scalar(select(DisruptionCredit.id)) is None
    done = post(staff, "/admin/disruption-credits/", form, confirm=True)
    assert done.status_code == 302
    batch = db.session.scalar(select(DisruptionCredit))
    assert (batch.accounts, batch.total) == (2, 450_000)
    assert "bob@example.com" in text(staff.get(f"/admin/disruption-credits/{batch.id}"))
    again = post(staff, "/admin/disruption-credits/", form, confirm=True)
    assert again.status_code == 409 and "credited already" in text(again)
    assert "batch" in text(staff.get("/admin/disruption-credits/", query_string={**scope, "preview": "1", "channel": str(world["channel"].id)}))


def test_the_admin_api_previews_and_posts_once(world, sql_app):
    _, secret = api_tokens.create_token(factories.ACTOR, person("operator", "script@example.com"), "ci")
    api = sql_app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    scope = {"starts_at": START.isoformat(), "ends_at": END.isoformat(), "models": ["gpt-4o"], "channel_ids": [world["channel"].id]}
    preview = api.post("/admin/api/v1/disruption-credits/preview", json=scope).json
    assert preview["total_micro_usd"] == 450_000 and [x["amount_micro_usd"] for x in preview["lines"]] == [300_000, 150_000]
    stale = api.post("/admin/api/v1/disruption-credits", json={**scope, "reason": "outage", "expected_total_usd": "0.4"})
    assert stale.status_code == 409
    posted = api.post("/admin/api/v1/disruption-credits", json={**scope, "reason": "outage", "expected_total_usd": "0.45"})
    assert posted.status_code == 201 and posted.json["accounts"] == 2
    assert api.post("/admin/api/v1/disruption-credits", json={**scope, "reason": "outage"}).status_code == 409
    one = api.get(f"/admin/api/v1/disruption-credits/{posted.json['id']}").json
    assert sum(x["amount_micro_usd"] for x in one["lines"]) == 450_000
    bad = api.post("/admin/api/v1/disruption-credits/preview", json={**scope, "starts_at": "yesterday"})
    assert bad.status_code == 400 and bad.json["error"]["param"] == "starts_at"
