"""Refunds under the terms, on both SQL back ends: a request's charge (full or partial, never more,
once), a top-up's unused part (14 days; later only with an admin's override), goodwill credit —
each a ledger entry, audited, applied to the live balance, and shown in the console."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import AuditEntry, EntryKind, LedgerEntry, Refund
from controlplane.runtime import runtime
from controlplane.services import ServiceError, billing, refunds
from relay.usage import UsageEvent
from tests import factories
from tests.console import person, post, sign_in, text
from workers.usage import write_batch

STAFF = factories.ACTOR


def charge(user, cost: int, request_id: str) -> str:
    """A finished request, ingested as the worker does it (request log + charge entry)."""
    now = time.time()
    write_batch([UsageEvent(request_id=request_id, started_at=now, finished_at=now, endpoint="/v1/chat/completions", status=200,
                            account_id=user.account_id, user_id=user.id, model="gpt-4o-mini", input_tokens=10, output_tokens=5, cost=cost)])
    db.session.commit()
    return request_id


def entries(kind: EntryKind) -> list[LedgerEntry]:
    return list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == kind.value).order_by(LedgerEntry.id)))


def test_a_request_is_refunded_in_full_once(sql_app):
    user = factories.funded_user("10")
    charge(user, 420_000, "req_full")
    row = refunds.refund_request(STAFF, "req_full", None, "answer was cut off")
    assert row.amount == 420_000 and row.kind == "request"
    assert ledger.stored_balance(user.account_id) == 10_000_000 == ledger.sum_of_entries(user.account_id)
    refund_entry = entries(EntryKind.REFUND)[0]
    assert (refund_entry.amount, refund_entry.request_id, refund_entry.reason) == (420_000, "req_full", "answer was cut off")
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "refund.request")).after["amount_micro_usd"] == 420_000
    assert runtime().quota.account(user.account_id)[0] == 10_420_000  # the live balance got the credit (the charge was never debited here)
    with pytest.raises(ServiceError) as again:
        refunds.refund_request(STAFF, "req_full", "0.01", "twice")
    assert again.value.status == 409
    assert len(entries(EntryKind.REFUND)) == 1


def test_a_refund_gives_the_key_its_spend_back_in_sql_and_live(sql_app):
    user = factories.funded_user("10")
    key, _ = factories.api_key(user, credit_limit_usd="1")
    now = time.time()
    write_batch([UsageEvent(request_id="req_key", started_at=now, finished_at=now, endpoint="/v1/chat/completions", status=200,
                            account_id=user.account_id, user_id=user.id, api_key_id=key.id, model="gpt-4o-mini", cost=300_000)])
    db.session.commit()
    runtime().quota.redis.hset(f"sb:akey:{key.id}", "spent", 300_000)  # as the relay's settle left it
    refunds.refund_request(STAFF, "req_key", "0.1", "partly wrong")
    db.session.refresh(key)
    assert key.spent == 200_000
    assert runtime().quota.key_spent(key.account_id, key.id) == (200_000, 0)
    from workers.reconcile import reconcile

    assert not [f for f in reconcile().findings if f.what == "key_spent"]


def test_a_partial_refund_is_at_most_the_charge(sql_app):
    user = factories.funded_user("10")
    charge(user, 500_000, "req_part")
    with pytest.raises(ServiceError, match=r"At most what was charged: \$0.500000"):
        refunds.refund_request(STAFF, "req_part", "0.500001", "too much")
    with pytest.raises(ServiceError, match="more than zero"):
        refunds.refund_request(STAFF, "req_part", "0", "nothing")
    refunds.refund_request(STAFF, "req_part", "0.2", "partial outage")
    assert ledger.stored_balance(user.account_id) == 10_000_000 - 300_000


def test_a_request_that_cost_nothing_or_does_not_exist_is_not_refunded(sql_app):
    user = factories.funded_user("1")
    charge(user, 0, "req_free")
    with pytest.raises(ServiceError, match="not charged"):
        refunds.refund_request(STAFF, "req_free", None, "why")
    with pytest.raises(ServiceError) as missing:
        refunds.refund_request(STAFF, "req_nope", None, "why")
    assert missing.value.status == 404


def test_the_database_refuses_a_second_refund_of_one_request(sql_app):
    """Two operators at once: the second insert hits the unique (kind, request_id) constraint."""
    user = factories.funded_user("1")
    charge(user, 100_000, "req_race")
    plan = refunds.request_refund("req_race")  # the second operator's check passed before the first committed
    refunds.refund_request(STAFF, "req_race", None, "first")

    def second():
        return ledger.post(user.account_id, EntryKind.REFUND, 100_000, request_id="req_race", reference_id=plan.charge.id, reason="second")

    with pytest.raises(ServiceError) as raced:
        refunds._record(STAFF, user.account_id, refunds.RefundKind.REQUEST, second, 100_000, "second", request_id="req_race")
    assert raced.value.status == 409
    assert ledger.stored_balance(user.account_id) == 1_000_000


def test_the_unused_part_of_a_top_up_is_what_newer_credits_do_not_cover(sql_app):
    user = factories.user()
    older = billing.topup(STAFF, user.account, "10", "card")
    newer = billing.topup(STAFF, user.account, "5", "card")
    charge(user, 3_000_000, "req_spend")  # balance 12: the $5 top-up is untouched, $7 of the $10 one is left
    assert refunds.topup_refund(older.id).unused == 7_000_000
    assert refunds.topup_refund(newer.id).unused == 5_000_000
    row = refunds.refund_topup(STAFF, older.id, "customer asked")
    assert row.amount == 7_000_000 and ledger.stored_balance(user.account_id) == 5_000_000
    assert entries(EntryKind.REFUND)[0].amount == -7_000_000 and entries(EntryKind.REFUND)[0].reference_id == older.id
    with pytest.raises(ServiceError) as again:
        refunds.refund_topup(STAFF, older.id, "again")
    assert again.value.status == 409


def test_a_spent_top_up_has_nothing_to_refund(sql_app):
    user = factories.user()
    topup = billing.topup(STAFF, user.account, "2", "card")
    charge(user, 2_000_000, "req_all")
    with pytest.raises(ServiceError, match="Nothing of this top-up is unused"):
        refunds.refund_topup(STAFF, topup.id, "asked")


def test_a_top_up_older_than_14_days_needs_an_override(sql_app):
    user = factories.user()
    topup = billing.topup(STAFF, user.account, "10", "card")
    db.session.execute(update(LedgerEntry).where(LedgerEntry.id == topup.id).values(created_at=topup.created_at - timedelta(days=15)))
    db.session.commit()
    with pytest.raises(ServiceError, match="older than 14 days"):
        refunds.refund_topup(STAFF, topup.id, "late request")
    assert refunds.refund_topup(STAFF, topup.id, "exception approved by finance", override=True).amount == 10_000_000


def test_goodwill_credit_is_a_ledger_entry_with_its_reason(sql_app):
    user = factories.user()
    refunds.goodwill(STAFF, user.account, "5", "Tuesday's outage")
    entry = entries(EntryKind.GOODWILL)[0]
    assert (entry.amount, entry.reason) == (5_000_000, "Tuesday's outage")
    assert db.session.scalar(select(func.count()).select_from(Refund)) == 1
    with pytest.raises(ServiceError, match="Say why"):
        refunds.goodwill(STAFF, user.account, "5", " ")


def test_support_refunds_a_request_from_the_console_after_confirming(app):
    support = sign_in(app.test_client(), person("support"))
    user = factories.funded_user("1", email="ana@example.com")
    charge(user, 123_456, "req_console")
    page = text(support.get("/admin/refunds/?request_id=req_console"))
    assert "$0.123456" in page
    asked = post(support, "/admin/refunds/request", {"request_id": "req_console", "amount": "", "reason": "cut off"})
    assert "Refund $0.12 of request req_console to ana@example.com?" in text(asked)
    assert ledger.stored_balance(user.account_id) == 1_000_000 - 123_456
    done = post(support, "/admin/refunds/request", {"request_id": "req_console", "amount": "", "reason": "cut off"}, confirm=True)
    assert done.status_code == 302 and ledger.stored_balance(user.account_id) == 1_000_000
    again = post(support, "/admin/refunds/request", {"request_id": "req_console", "reason": "again"}, confirm=True)
    assert again.status_code == 409 and "refunded only once" in text(again)
    assert post(support, "/admin/refunds/goodwill", {"user": "ana@example.com", "amount": "1", "reason": "x"}, confirm=True).status_code == 403


def test_only_an_admin_overrides_the_14_day_limit_in_the_console(app):
    operator, admin = (sign_in(app.test_client(), person(role)) for role in ("operator", "admin"))
    user = factories.user(email="late@example.com")
    topup = billing.topup(STAFF, user.account, "10", "card")
    db.session.execute(update(LedgerEntry).where(LedgerEntry.id == topup.id).values(created_at=topup.created_at - timedelta(days=20)))
    db.session.commit()
    form = {"topup": str(topup.id), "reason": "finance approved", "override": "y"}
    refused = post(operator, "/admin/refunds/topup", form, confirm=True)
    assert refused.status_code == 403 and "only an admin" in text(refused)
    asked = post(admin, "/admin/refunds/topup", form)
    assert "Refund $10.00 of the $10.00 top-up to late@example.com?" in text(asked)
    assert post(admin, "/admin/refunds/topup", form, confirm=True).status_code == 302
    assert ledger.stored_balance(user.account_id) == 0
    assert "finance approved" in text(admin.get(f"/admin/users/{user.id}"))
