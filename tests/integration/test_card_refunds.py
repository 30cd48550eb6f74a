"""Refunds of card top-ups to the card, on both SQL back ends: the customer asks within 14 days for
the unused part, an operator approves (the fake Stripe is asked for exactly that amount, once, and
the ledger entry is posted once whichever of the approval and Stripe's webhook lands first) or
declines; account closure asks when the terms allow."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import AuditEntry, EntryKind, LedgerEntry, Payment, Refund, RefundRequest
from controlplane.runtime import runtime
from controlplane.services import ServiceError, card_refunds, closure, refunds
from tests import factories
from tests.integration.test_refunds import charge
from tests.payments import card_payments, deliver, paid_topup, stripe_fake  # noqa: F401  (fixtures)

STAFF = factories.ACTOR


def refund_calls(fake) -> list[dict]:
    return [r for r in fake.requests if r["method"] == "POST" and r["path"] == "/v1/refunds"]


def test_the_unused_part_goes_back_to_the_card_once(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id = paid_topup(client, card_payments, user, "20")
    charge(user, 7_345_678, "req_spent")  # $7.345678 spent: $12.654322 unused, $12.65 refundable to a card
    plan = card_refunds.terms(db.session.get(Payment, payment_id))
    assert (plan.unused, plan.refundable, plan.days_left, plan.refusal) == (12_654_322, 12_650_000, 14, "")
    asked = card_refunds.request(STAFF, user.id, user.account, payment_id, "not needed after all")
    calls_before = len(refund_calls(card_payments))
    done = card_refunds.approve(STAFF, asked.id)
    calls = refund_calls(card_payments)[calls_before:]
    intent = db.session.get(Payment, payment_id).payment_intent_id
    assert [(c["form"]["payment_intent"], c["form"]["amount"]) for c in calls] == [(intent, "1265")]
    assert (done.status, done.amount) == ("approved", 12_650_000) and done.stripe_refund_id.startswith("re_")
    refund_entries = list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.REFUND.value)))
    assert [e.amount for e in refund_entries] == [-12_650_000]
    assert ledger.stored_balance(user.account_id) == 4_322 == ledger.sum_of_entries(user.account_id)  # the sub-cent rest stays
    assert runtime().quota.account(user.account_id)[0] == 20_000_000 - 12_650_000  # the live balance took the refund (the charge was SQL-only here)
    # Stripe's own webhook for that refund arrives afterwards: nothing moves again.
    assert deliver(client, card_payments, card_payments.charge_refunded(intent)).json["outcome"] == "nothing newly refunded"
    assert len(list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.REFUND.value)))) == 1
    with pytest.raises(ServiceError) as again:
        card_refunds.approve(STAFF, asked.id)
    assert again.value.status == 409
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "refund_request.approve")).after["stripe_refund_id"] == done.stripe_refund_id


def test_the_webhook_landing_before_the_approval_commits_is_not_counted_twice(sql_app, card_payments):
    """Stripe delivers charge.refunded for the approval's own refund while the approval is waiting
    for Stripe's answer: the webhook posts the entry, the approval sees the refunded amount moved
    and posts none; the request ends approved."""
    client = sql_app.test_client()
    user = factories.user()
    payment_id = paid_topup(client, card_payments, user, "10")
    asked = card_refunds.request(STAFF, user.id, user.account, payment_id, "")
    intent = db.session.get(Payment, payment_id).payment_intent_id
    outcomes = []
    card_payments.on_refund = lambda refund: outcomes.append(deliver(client, card_payments, card_payments.charge_refunded(intent)).json["outcome"])
    try:
        done = card_refunds.approve(STAFF, asked.id)
    finally:
        card_payments.on_refund = None
    assert outcomes == ["refunded $10.00"]
    assert done.status == "approved" and done.amount == 10_000_000
    assert [e.amount for e in db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.REFUND.value))] == [-10_000_000]
    assert ledger.stored_balance(user.account_id) == 0 == runtime().quota.account(user.account_id)[0]
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "refund_request.approve")).after["ledger_posted"] is False


def test_a_declined_request_is_final_and_says_why(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id = paid_topup(client, card_payments, user, "10")
    asked = card_refunds.request(STAFF, user.id, user.account, payment_id, "")
    calls = len(refund_calls(card_payments))
    with pytest.raises(ServiceError, match="Say why"):
        card_refunds.decline(STAFF, asked.id, " ")
    card_refunds.decline(STAFF, asked.id, "used for a promotion")
    assert db.session.get(RefundRequest, asked.id).decision_note == "used for a promotion"
    with pytest.raises(ServiceError) as again:
        card_refunds.request(STAFF, user.id, user.account, payment_id, "please")
    assert again.value.status == 409
    assert ledger.stored_balance(user.account_id) == 10_000_000 and len(refund_calls(card_payments)) == calls


def test_after_14_days_or_when_all_spent_nothing_can_be_asked(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    old = paid_topup(client, card_payments, user, "10")
    entry_id = db.session.get(Payment, old).credit_entry_id
    created = db.session.get(LedgerEntry, entry_id).created_at
    db.session.execute(update(LedgerEntry).where(LedgerEntry.id == entry_id).values(created_at=created - timedelta(days=15)))
    db.session.commit()
    with pytest.raises(ServiceError, match="older than 14 days"):
        card_refunds.request(STAFF, user.id, user.account, old, "")
    other = factories.user()
    spent = paid_topup(client, card_payments, other, "10")
    charge(other, 10_000_000, "req_all")
    with pytest.raises(ServiceError, match="Nothing of this top-up is unused"):
        card_refunds.request(STAFF, other.id, other.account, spent, "")


def test_a_top_up_refunded_to_the_balance_is_not_refunded_to_the_card_too(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id = paid_topup(client, card_payments, user, "10")
    refunds.refund_topup(STAFF, db.session.get(Payment, payment_id).credit_entry_id, "paid back by bank transfer")
    with pytest.raises(ServiceError, match="refunded already"):
        card_refunds.request(STAFF, user.id, user.account, payment_id, "")


def test_account_closure_asks_for_every_eligible_top_up(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    first = paid_topup(client, card_payments, user, "10")
    second = paid_topup(client, card_payments, user, "5")
    charge(user, 12_000_000, "req_most")  # $3 left: all of it belongs to the newest top-up
    closure.close(STAFF, user, "leaving")  # the closure itself asks, once
    made = db.session.scalars(select(RefundRequest).where(RefundRequest.account_id == user.account_id)).all()
    assert [(r.payment_id, r.reason) for r in made] == [(second, "Account closed")]
    assert card_refunds.request_refund_for_closure(user.account_id) is None  # asked already: nothing new
    assert card_refunds.terms(db.session.get(Payment, first)).refusal == "Nothing of this top-up is unused."
    assert db.session.scalar(select(Refund)) is None  # asking moves no money


def test_a_customer_cannot_ask_about_another_accounts_payment(sql_app, card_payments):
    client = sql_app.test_client()
    owner, stranger = factories.user(), factories.user()
    payment_id = paid_topup(client, card_payments, owner, "10")
    from controlplane.services import NotFound

    with pytest.raises(NotFound):
        card_refunds.request(STAFF, stranger.id, stranger.account, payment_id, "")
