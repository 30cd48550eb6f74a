"""Card top-ups through Stripe Checkout, on both SQL back ends, against a fake Stripe on a real
socket driven by the official library: money is credited only by a verified webhook, exactly once
whatever Stripe redelivers or reorders; failures, refunds on Stripe and disputes are handled once."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import AuditEntry, EntryKind, Invoice, LedgerEntry, Payment, StripeEvent
from controlplane.runtime import runtime
from controlplane.services import ServiceError, payments
from tests import factories
from tests.payments import card_payments, deliver, paid_topup, start, stripe_fake  # noqa: F401  (fixtures)


def entries(account_id: int, kind: EntryKind) -> list[LedgerEntry]:
    return list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.account_id == account_id, LedgerEntry.kind == kind.value)))


def live(account_id: int) -> int:
    return runtime().quota.account(account_id)[0]


def test_opening_checkout_credits_nothing_and_sends_the_amount_to_stripe(sql_app, card_payments):
    user = factories.user()
    payment_id, session_id = start(user, "12.50")
    payment = db.session.get(Payment, payment_id)
    assert (payment.status, payment.amount) == ("pending", 12_500_000)
    created = [r for r in card_payments.requests if r["method"] == "POST" and r["path"] == "/v1/checkout/sessions"][-1]
    assert created["form"]["line_items"][0]["price_data"]["unit_amount"] == "1250"
    assert created["form"]["client_reference_id"] == str(payment_id)
    assert card_payments.sessions[session_id]["url"].startswith(card_payments.url)
    assert ledger.stored_balance(user.account_id) == 0 and entries(user.account_id, EntryKind.TOPUP) == []


@pytest.mark.parametrize("usd,message", [("4.99", "smallest"), ("500.01", "largest"), ("10.001", "whole cents"), ("-5", "negative")])
def test_amounts_outside_the_operators_limits_are_refused(sql_app, card_payments, usd, message):
    with pytest.raises(ServiceError, match=message):
        start(factories.user(), usd)
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 0


def test_a_paid_session_is_credited_once_with_an_invoice(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id, session_id = start(user, "20")
    event = card_payments.pay(session_id)
    first = deliver(client, card_payments, event)
    assert first.status_code == 200 and first.json["outcome"] == "credited $20.00"
    assert deliver(client, card_payments, event).json["outcome"] == "handled already"  # Stripe redelivers the same event
    again = dict(event, id="evt_other_delivery")  # a different event saying the same thing
    assert deliver(client, card_payments, again).json["outcome"] == "credited already"
    settled = card_payments.settle(session_id)  # and a late async success for it
    assert deliver(client, card_payments, settled).json["outcome"] == "credited already"
    credits = entries(user.account_id, EntryKind.TOPUP)
    assert [(e.amount, e.request_id, e.reference_id) for e in credits] == [(20_000_000, f"pay_{payment_id}", payment_id)]
    assert ledger.stored_balance(user.account_id) == 20_000_000 == ledger.sum_of_entries(user.account_id) == live(user.account_id)
    payment = db.session.get(Payment, payment_id)
    assert payment.status == "paid" and payment.payment_intent_id == card_payments.sessions[session_id]["payment_intent"]
    assert payment.credit_entry_id == credits[0].id
    invoice = db.session.scalar(select(Invoice).where(Invoice.payment_id == payment_id))
    assert invoice.code == "INV-000001" and invoice.amount == 20_000_000 and invoice.seller["tax_id"] == "GB123456789"
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "payment.credited")).after["invoice"] == "INV-000001"


def test_a_bad_or_stale_signature_changes_nothing(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    _, session_id = start(user)
    event = card_payments.pay(session_id)
    assert deliver(client, card_payments, event, secret="whsec_someone_else").status_code == 400
    assert deliver(client, card_payments, event, timestamp=int(time.time()) - 3600).status_code == 400  # outside the 5-minute tolerance
    body, headers = card_payments.signed(event)
    assert client.post("/stripe/webhook", data=body.replace(b"20", b"99", 1), headers=headers).status_code == 400  # body altered
    assert client.post("/stripe/webhook", data=body).status_code == 400  # no signature at all
    assert client.post("/stripe/webhook", data=b" " * 600_000, headers=headers).status_code == 413
    assert ledger.stored_balance(user.account_id) == 0 and db.session.scalar(select(func.count()).select_from(StripeEvent)) == 0
    assert deliver(client, card_payments, event).status_code == 200 and ledger.stored_balance(user.account_id) == 20_000_000


def test_the_return_from_checkout_credits_nothing(sql_app, card_payments):
    """Only the webhook credits: a customer who comes back to the return page first sees "pending"."""
    from tests.console import sign_in

    user = factories.user()
    _, session_id = start(user)
    card_payments.pay(session_id)  # paid on Stripe; the webhook has not arrived
    client = sign_in(sql_app.test_client(), user)
    page = client.get(f"/billing/topup/return?session_id={session_id}").get_data(as_text=True)
    assert "pending" in page.lower() and ledger.stored_balance(user.account_id) == 0


def test_a_delayed_payment_is_credited_when_it_settles_and_never_when_it_fails(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    good, good_session = start(user, "10")
    bad, bad_session = start(user, "15")
    assert deliver(client, card_payments, card_payments.pay(good_session, delayed=True)).json["outcome"] == "not paid yet"
    assert deliver(client, card_payments, card_payments.pay(bad_session, delayed=True)).json["outcome"] == "not paid yet"
    assert ledger.stored_balance(user.account_id) == 0
    assert deliver(client, card_payments, card_payments.settle(good_session)).json["outcome"] == "credited $10.00"
    assert deliver(client, card_payments, card_payments.fail(bad_session)).json["outcome"] == "payment failed: nothing credited"
    late_success = card_payments.settle(bad_session)  # out of order: a success after the failure credits nothing
    assert deliver(client, card_payments, late_success).json["outcome"] == "payment is failed"
    assert [db.session.get(Payment, p).status for p in (good, bad)] == ["paid", "failed"]
    assert ledger.stored_balance(user.account_id) == 10_000_000 == live(user.account_id)


def test_a_checkout_left_unpaid_expires_and_is_never_credited(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id, session_id = start(user, "10")
    assert deliver(client, card_payments, card_payments.expire(session_id)).json["outcome"] == "checkout expired unpaid: nothing credited"
    assert db.session.get(Payment, payment_id).status == "failed"
    assert deliver(client, card_payments, card_payments.pay(session_id)).json["outcome"] == "payment is failed"
    assert ledger.stored_balance(user.account_id) == 0


def test_a_refund_on_stripe_is_reflected_once_whatever_the_order(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id = paid_topup(client, card_payments, user, "30")
    intent = db.session.get(Payment, payment_id).payment_intent_id
    first = card_payments.refund_on_dashboard(intent, 1000)  # $10, cumulative 1000
    second = card_payments.refund_on_dashboard(intent, 500)  # $5 more, cumulative 1500
    assert deliver(client, card_payments, second).json["outcome"] == "refunded $15.00"
    assert deliver(client, card_payments, first).json["outcome"] == "nothing newly refunded"  # older news, late
    assert deliver(client, card_payments, second).json["outcome"] == "handled already"
    refunds = entries(user.account_id, EntryKind.REFUND)
    assert [e.amount for e in refunds] == [-15_000_000]
    assert ledger.stored_balance(user.account_id) == 15_000_000 == live(user.account_id) == ledger.sum_of_entries(user.account_id)


def test_a_charge_event_before_its_payment_is_known_is_asked_again(sql_app, card_payments):
    """A refund of a charge whose payment intent is not known here and carries no payment reference
    is answered 409, so Stripe delivers it again later; nothing is recorded meanwhile."""
    client = sql_app.test_client()
    user = factories.user()
    payment_id, session_id = start(user, "10")
    completed = card_payments.pay(session_id)
    intent = card_payments.sessions[session_id]["payment_intent"]
    card_payments.create_refund({"payment_intent": intent})
    refunded = card_payments.charge_refunded(intent)
    refunded["data"]["object"]["metadata"] = {}
    assert deliver(client, card_payments, refunded).status_code == 409
    assert db.session.get(StripeEvent, refunded["id"]) is None
    assert deliver(client, card_payments, completed).status_code == 200
    assert deliver(client, card_payments, refunded).json["outcome"] == "refunded $10.00"
    assert ledger.stored_balance(user.account_id) == 0 == ledger.sum_of_entries(user.account_id)


def test_a_dispute_holds_back_the_credit_flags_the_payment_and_is_recorded_once(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id = paid_topup(client, card_payments, user, "25")
    intent = db.session.get(Payment, payment_id).payment_intent_id
    event = card_payments.dispute(intent)
    assert deliver(client, card_payments, event).json["outcome"] == "disputed: $25.00 held back, account flagged"
    assert deliver(client, card_payments, dict(event, id="evt_again")).json["outcome"] == "dispute recorded already"
    payment = db.session.get(Payment, payment_id)
    assert payment.flagged_at is not None and payment.disputed_amount == 25_000_000
    assert [e.amount for e in entries(user.account_id, EntryKind.DISPUTE)] == [-25_000_000]
    assert ledger.stored_balance(user.account_id) == 0 == live(user.account_id)
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "payment.disputed")) is not None


@pytest.mark.parametrize("status", ["won", "warning_closed"])
def test_a_dispute_won_returns_the_credit_once_and_lifts_the_flag(sql_app, card_payments, status):
    client = sql_app.test_client()
    user = factories.user()
    payment_id = paid_topup(client, card_payments, user, "25")
    intent = db.session.get(Payment, payment_id).payment_intent_id
    opened = card_payments.dispute(intent, cents=1_000)
    closed = card_payments.close_dispute(opened["data"]["object"]["id"], status)
    assert deliver(client, card_payments, closed).status_code == 409  # before its dispute: Stripe delivers it again later
    assert deliver(client, card_payments, opened).json["outcome"] == "disputed: $10.00 held back, account flagged"
    assert deliver(client, card_payments, closed).json["outcome"] == f"dispute {status}: $10.00 returned, flag lifted"
    assert deliver(client, card_payments, dict(closed, id="evt_again")).json["outcome"] == "dispute closed already"
    payment = db.session.get(Payment, payment_id)
    assert payment.flagged_at is None and payment.disputed_amount == 0
    assert [e.amount for e in entries(user.account_id, EntryKind.DISPUTE)] == [-10_000_000, 10_000_000]
    assert ledger.stored_balance(user.account_id) == 25_000_000 == live(user.account_id) == ledger.sum_of_entries(user.account_id)


def test_a_dispute_lost_keeps_the_credit_taken_back(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id = paid_topup(client, card_payments, user, "25")
    opened = card_payments.dispute(db.session.get(Payment, payment_id).payment_intent_id)
    assert deliver(client, card_payments, opened).status_code == 200
    closed = card_payments.close_dispute(opened["data"]["object"]["id"], "lost")
    assert deliver(client, card_payments, closed).json["outcome"] == "dispute closed (lost): $25.00 stays taken back"
    payment = db.session.get(Payment, payment_id)
    assert payment.flagged_at is not None and payment.disputed_amount == 25_000_000
    assert ledger.stored_balance(user.account_id) == 0 == live(user.account_id)
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "payment.dispute_lost")) is not None


def test_an_event_nobody_uses_or_a_session_from_elsewhere_is_acknowledged_and_ignored(sql_app, card_payments):
    client = sql_app.test_client()
    other = card_payments.create_session({"line_items": [{"price_data": {"currency": "usd", "unit_amount": "500"}}]})
    assert deliver(client, card_payments, card_payments.pay(other["id"])).json["outcome"] == "not a Switchboard payment: ignored"
    assert deliver(client, card_payments, card_payments.event("customer.created", {"id": "cus_1"})).status_code == 200
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == 0


def test_stripe_down_when_opening_checkout_charges_nothing_and_says_so(sql_app, card_payments, monkeypatch):
    import dataclasses

    rt = runtime()
    monkeypatch.setattr(rt, "settings", dataclasses.replace(rt.settings, stripe_api_base="http://127.0.0.1:9"))
    user = factories.user()
    with pytest.raises(ServiceError, match="Nothing was charged") as refused:
        payments.start_checkout(factories.ACTOR, user, user.account, "20", "https://x/ok", "https://x/cancel")
    assert refused.value.status == 502
    assert db.session.scalar(select(Payment.status)) == "failed"


def _at_once(calls) -> list:
    """Run the calls in threads released together; their results in order (an exception, as the
    test client raises what a server would answer with a 500, counts as its result)."""
    import threading

    start_line = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        start_line.wait()
        try:
            results[i] = call().status_code
        except Exception as error:  # noqa: BLE001 - a refused delivery, delivered again below
            results[i] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_one_event_delivered_several_times_at_once_credits_once(sql_app, card_payments):
    """Stripe may deliver an event again while the first delivery is still being handled. A delivery
    the database turns away (a 5xx) is delivered again by Stripe later, as here."""
    user = factories.user()
    _, session_id = start(user, "20")
    event = card_payments.pay(session_id)
    answers = _at_once([lambda: deliver(sql_app.test_client(), card_payments, event) for _ in range(4)])
    again = [deliver(sql_app.test_client(), card_payments, event) for a in answers if a != 200]
    assert all(a.status_code == 200 for a in again)
    assert [e.amount for e in entries(user.account_id, EntryKind.TOPUP)] == [20_000_000]
    assert ledger.stored_balance(user.account_id) == 20_000_000 == live(user.account_id)


def test_payments_credited_at_once_get_consecutive_invoice_numbers(sql_app, card_payments):
    users = [factories.user() for _ in range(3)]
    events = [card_payments.pay(start(u, "10")[1]) for u in users]
    answers = _at_once([lambda e=e: deliver(sql_app.test_client(), card_payments, e) for e in events])
    for event, answer in zip(events, answers, strict=True):
        if answer != 200:  # turned away by a busy database: Stripe delivers it again
            assert deliver(sql_app.test_client(), card_payments, event).status_code == 200
    assert sorted(db.session.scalars(select(Invoice.code))) == ["INV-000001", "INV-000002", "INV-000003"]
    assert all(ledger.stored_balance(u.account_id) == 10_000_000 for u in users)


def test_reconciling_a_day_names_each_disagreement(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    credited = paid_topup(client, card_payments, user, "10")
    _, lost_session = start(user, "15")
    card_payments.pay(lost_session)  # paid on Stripe, its webhook lost
    _, open_session = start(user, "20")  # still on the Checkout page: nobody disagrees
    foreign = card_payments.create_session({"line_items": [{"price_data": {"currency": "usd", "unit_amount": "700"}}]})
    card_payments.pay(foreign["id"])  # another integration's sale on the same Stripe account
    day = db.session.get(Payment, credited).created_at.date()
    found = {row.session_id: row.problem for row in payments.reconcile_day(day)}
    assert found[db.session.get(Payment, credited).checkout_session_id] == ""
    assert found[lost_session] == "paid on Stripe, not credited here"
    assert found[open_session] == ""
    assert found[foreign["id"]] == "paid on Stripe, unknown here"
    from datetime import timedelta

    assert payments.reconcile_day(day - timedelta(days=1)) == []
