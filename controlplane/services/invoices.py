"""Invoices for card top-ups: numbered in gapless series (the operator names the current one by its
prefix), with the seller's and the customer's details as they were when the payment was credited.

The number is taken in the transaction that credits the payment (an UPDATE of the series row, which
PostgreSQL holds locked until that transaction ends): a credit that rolls back gives its number back.
"""
from __future__ import annotations

from sqlalchemy import select, update

from controlplane.extensions import db
from controlplane.models import Account, Invoice, InvoiceSeries, Payment, User
from controlplane.services.payment_settings import PaymentConfig

NUMBER_DIGITS = 6


def _series(prefix: str) -> InvoiceSeries:
    series = db.session.scalar(select(InvoiceSeries).where(InvoiceSeries.prefix == prefix))
    if series is None:
        series = InvoiceSeries(prefix=prefix, last_number=0)
        db.session.add(series)
        db.session.flush()
    return series


def issue(payment: Payment, config: PaymentConfig) -> Invoice:
    """The payment's invoice, numbered next in the current series. The caller commits."""
    series = _series(config.invoice_prefix)
    db.session.execute(update(InvoiceSeries).where(InvoiceSeries.id == series.id).values(last_number=InvoiceSeries.last_number + 1))
    number = int(db.session.scalar(select(InvoiceSeries.last_number).where(InvoiceSeries.id == series.id)))
    account = db.session.get(Account, payment.account_id)
    email = db.session.scalar(select(User.email).where(User.id == payment.user_id)) if payment.user_id else None
    invoice = Invoice(
        series_id=series.id, number=number, code=f"{series.prefix}{number:0{NUMBER_DIGITS}d}", payment_id=payment.id,
        account_id=payment.account_id, seller=config.seller.as_dict(),
        buyer={"name": payment.billing_name or account.name, "address": payment.billing_address, "tax_id": payment.billing_tax_id,
               "email": email or ""},
        amount=payment.amount, currency=payment.currency, payment_method=payment.payment_method or "card",
        checkout_session_id=payment.checkout_session_id, payment_intent_id=payment.payment_intent_id,
    )
    db.session.add(invoice)
    db.session.flush()
    return invoice


def for_payment(payment_id: int) -> Invoice | None:
    return db.session.scalar(select(Invoice).where(Invoice.payment_id == payment_id))
