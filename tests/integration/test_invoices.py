"""Invoices of card top-ups, on both SQL back ends: numbered without gaps in the operator's current
series (a credit that rolls back gives its number back; a new prefix starts a new series; going
back to an old one carries on), with the seller's and customer's details as issued, and a PDF."""
from __future__ import annotations

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.invoice_pdf import render
from controlplane.models import Invoice, Payment
from controlplane.services import payments, stripe_events
from controlplane.stripe_gateway import session_from_event
from tests import factories
from tests.payments import card_payments, configure, deliver, paid_topup, start, stripe_fake  # noqa: F401  (fixtures)


def codes() -> list[str]:
    return list(db.session.scalars(select(Invoice.code).order_by(Invoice.id)))


def test_numbers_run_without_gaps_per_series(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    paid_topup(client, card_payments, user, "10")
    # A credit whose transaction rolls back (the database refused it, the process died) keeps no number.
    payment_id, session_id = start(user, "10")
    event = card_payments.pay(session_id)
    stripe_events.credit(db.session.get(Payment, payment_id), session_from_event(event["data"]["object"]), "card")
    db.session.rollback()
    assert codes() == ["INV-000001"]
    assert deliver(client, card_payments, event).status_code == 200  # the same payment, credited for real
    configure(card_payments, invoice_prefix="SB-2027-")
    paid_topup(client, card_payments, user, "10")
    configure(card_payments, invoice_prefix="INV-")
    paid_topup(client, card_payments, user, "10")
    assert codes() == ["INV-000001", "INV-000002", "SB-2027-000001", "INV-000003"]


def test_an_invoice_keeps_the_details_it_was_issued_with(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payments.save_profile(factories.ACTOR, user.account, "Zoë Müller GmbH", "Hauptstraße 1\n10115 Berlin", "DE123456789")
    payment_id = paid_topup(client, card_payments, user, "10")
    payments.save_profile(factories.ACTOR, user.account, "Someone Else", "", "")
    configure(card_payments, seller_name="New Seller Name")
    invoice = db.session.scalar(select(Invoice).where(Invoice.payment_id == payment_id))
    assert invoice.buyer == {"name": "Zoë Müller GmbH", "address": "Hauptstraße 1\n10115 Berlin", "tax_id": "DE123456789", "email": user.email}
    assert invoice.seller["name"] == "Switchboard Ltd"
    payment = db.session.get(Payment, payment_id)
    assert (invoice.payment_intent_id, invoice.checkout_session_id, invoice.payment_method) == (
        payment.payment_intent_id, payment.checkout_session_id, "card")


def test_the_pdf_carries_the_invoices_facts(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payments.save_profile(factories.ACTOR, user.account, "Zoë Müller GmbH", "Hauptstraße 1", "DE123456789")
    paid_topup(client, card_payments, user, "12.34")
    invoice = db.session.scalar(select(Invoice))
    pdf = render(invoice, compress=False)
    assert pdf.startswith(b"%PDF")
    for fact in ("INV-000001", "Zoë Müller GmbH", "DE123456789", "GB123456789", "$12.34", invoice.payment_intent_id):
        assert fact.encode("latin-1") in pdf, fact


def test_the_invoice_names_the_method_the_customer_paid_with(sql_app, card_payments):
    client = sql_app.test_client()
    user = factories.user()
    payment_id, session_id = start(user, "10")
    assert deliver(client, card_payments, card_payments.pay(session_id, method="link")).status_code == 200
    assert db.session.scalar(select(Invoice.payment_method).where(Invoice.payment_id == payment_id)) == "link"
    assert db.session.get(Payment, payment_id).payment_method == "link"
