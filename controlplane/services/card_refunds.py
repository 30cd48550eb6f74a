"""Refunds of card top-ups to the card, under the terms: a customer asks within 14 days for the
unused part of a top-up; an operator approves (Stripe refunds exactly that, in whole cents, and the
ledger entry is posted once) or declines. Account closure asks on the customer's behalf.

The refunded amount is the unused part rounded down to a cent (Stripe refunds cents); what is below
a cent stays on the balance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import (
    Account, EntryKind, Payment, PaymentStatus, Refund, RefundKind, RefundRequest, RefundRequestStatus, utcnow,
)
from controlplane.models.payments import NOTE_MAX
from controlplane.services import notices, payment_settings, refunds
from controlplane.services.base import Actor, NotFound, ServiceError, audit
from controlplane.services.billing import apply_live
from controlplane.stripe_gateway import MICRO_PER_CENT, StripeUnavailable
from relay.pricing import usd_text

DAY_SECONDS = 86_400


@dataclass(frozen=True)
class RefundTerms:
    """The terms' rules for one card top-up, computed now."""

    payment: Payment
    unused: int  # µ$ of the top-up not spent yet
    refundable: int  # what would go back to the card: the unused part in whole cents
    days_left: int  # of the 14-day window (0: closed)
    refusal: str  # why it cannot be refunded; "" when it can


def terms(payment: Payment, now: datetime | None = None) -> RefundTerms:
    now = now or utcnow()
    if payment.status != PaymentStatus.PAID.value or payment.credit_entry_id is None:
        return RefundTerms(payment, 0, 0, 0, "This payment was not credited, so there is nothing to refund.")
    plan = refunds.topup_refund(payment.credit_entry_id, now)
    left = (plan.entry.created_at + refunds.TOPUP_WINDOW - now).total_seconds()
    days_left = max(0, math.ceil(left / DAY_SECONDS))
    unused = min(plan.unused, payment.amount - payment.refunded_amount - payment.disputed_amount)
    refundable = max(0, unused) // MICRO_PER_CENT * MICRO_PER_CENT
    refusal = ""
    if plan.previous is not None or payment.refunded_amount:
        refusal = "This top-up was refunded already."
    elif payment.dispute_id:
        refusal = "This payment is disputed with the card issuer."
    elif plan.late:
        refusal = "This top-up is older than 14 days."
    elif refundable <= 0:
        refusal = "Nothing of this top-up is unused."
    return RefundTerms(payment, max(0, unused), refundable, days_left, refusal)


def _request(account: Account, payment: Payment, reason: str, requested_by: int | None, actor: Actor) -> RefundRequest:
    plan = terms(payment)
    if plan.refusal:
        raise ServiceError(plan.refusal, "payment", status=409)
    row = RefundRequest(account_id=account.id, payment_id=payment.id, requested_by=requested_by, reason=reason,
                        status=RefundRequestStatus.PENDING.value, decision_note="")
    try:
        db.session.add(row)
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise ServiceError("A refund of this top-up was asked for already.", "payment", status=409) from None
    audit(actor, "refund_request.create", "account", account.id,
          after={"refund_request_id": row.id, "payment_id": payment.id, "unused_micro_usd": plan.unused, "reason": reason})
    return row


def request(actor: Actor, user_id: int, account: Account, payment_id: int, reason: str) -> RefundRequest:
    """The customer asks for a top-up's unused part back on their card."""
    reason = (reason or "").strip()
    if len(reason) > NOTE_MAX:
        raise ServiceError(f"At most {NOTE_MAX} characters.", "reason")
    payment = db.session.get(Payment, payment_id)
    if payment is None or payment.account_id != account.id:
        raise NotFound(f"payment {payment_id}")
    row = _request(account, payment, reason, user_id, actor)
    db.session.commit()
    return row


def request_refunds_for_closure(account_id: int) -> list[RefundRequest]:
    """For the account-closure flow: a refund request for every card top-up of the account that the
    terms would refund now (within 14 days, something unused, not refunded or asked for already).
    The caller's transaction is committed."""
    account = db.session.get(Account, account_id)
    if account is None:
        return []
    asked = set(db.session.scalars(select(RefundRequest.payment_id).where(RefundRequest.account_id == account_id)))
    made = []
    for payment in db.session.scalars(select(Payment).where(Payment.account_id == account_id, Payment.status == PaymentStatus.PAID.value)
                                      .order_by(Payment.id.desc())):
        if payment.id in asked or terms(payment).refusal:
            continue
        made.append(_request(account, payment, "Account closed", None, Actor.system("account-closure")))
    db.session.commit()
    return made


def request_refund_for_closure(account_id: int) -> RefundRequest | None:
    """`request_refunds_for_closure`, returning the newest request made (None: nothing eligible)."""
    made = request_refunds_for_closure(account_id)
    return made[0] if made else None


def find_request(request_id: int) -> RefundRequest:
    row = db.session.get(RefundRequest, request_id)
    if row is None:
        raise NotFound(f"refund request {request_id}")
    return row


def pending_request(request_id: int) -> RefundRequest:
    row = db.session.get(RefundRequest, request_id)
    if row is None:
        raise NotFound(f"refund request {request_id}")
    if row.status != RefundRequestStatus.PENDING.value:
        raise ServiceError(f"This request is {row.status} already.", status=409)
    return row


def approve(actor: Actor, request_id: int) -> RefundRequest:
    """Refund the unused part (computed now) to the card, then post the ledger entry once.

    Stripe's idempotency key names the payment intent and the request, so a retried approval never refunds twice. The
    webhook for the same refund (charge.refunded) may land before this commits: whichever moves the
    payment's refunded amount first posts the entry, the other sees it moved and posts nothing.
    """
    row = pending_request(request_id)
    payment = row.payment
    plan = terms(payment)
    if plan.refusal:
        raise ServiceError(f"{plan.refusal} Decline the request instead.", status=409)
    if not payment.payment_intent_id:
        raise ServiceError("Stripe's payment intent of this payment is not known; refund it on Stripe's dashboard.", status=409)
    old, intent, gateway = payment.refunded_amount, payment.payment_intent_id, payment_settings.load().gateway()
    db.session.commit()  # no transaction stays open while Stripe answers (the webhook may write meanwhile)
    try:
        card = gateway.refund(intent, plan.refundable // MICRO_PER_CENT, f"refund-{intent}-{row.id}")
    except StripeUnavailable as error:
        raise ServiceError(f"Not refunded: {error}", status=502) from None
    amount = card.amount * MICRO_PER_CENT
    won = db.session.execute(update(Payment).where(Payment.id == payment.id, Payment.refunded_amount == old)
                             .values(refunded_amount=old + amount)).rowcount == 1
    if won:
        reason = f"Refunded to the card (Stripe {card.id})"
        entry = ledger.post(payment.account_id, EntryKind.REFUND, -amount, operator_id=actor.id, reference_id=payment.credit_entry_id,
                            reason=reason)
        db.session.flush()
        db.session.add(Refund(kind=RefundKind.TOPUP.value, account_id=payment.account_id, topup_entry_id=payment.credit_entry_id,
                              ledger_entry_id=entry.id, amount=amount, reason=reason, operator_id=actor.id))
    row.status, row.amount, row.stripe_refund_id = RefundRequestStatus.APPROVED.value, amount, card.id
    row.decided_by, row.decided_at = actor.id, utcnow()
    audit(actor, "refund_request.approve", "account", payment.account_id,
          after={"refund_request_id": row.id, "amount_micro_usd": amount, "stripe_refund_id": card.id, "ledger_posted": won})
    db.session.commit()
    if won:
        apply_live(payment.account_id, -amount)
    notices.refund_decision(row.id)
    return row


def decline(actor: Actor, request_id: int, note: str) -> RefundRequest:
    row = pending_request(request_id)
    note = (note or "").strip()
    if not note:
        raise ServiceError("Say why (the customer sees this).", "note")
    if len(note) > NOTE_MAX:
        raise ServiceError(f"At most {NOTE_MAX} characters.", "note")
    row.status, row.decision_note, row.decided_by, row.decided_at = RefundRequestStatus.DECLINED.value, note, actor.id, utcnow()
    audit(actor, "refund_request.decline", "account", row.account_id, after={"refund_request_id": row.id, "note": note})
    db.session.commit()
    notices.refund_decision(row.id)
    return row


def describe(plan: RefundTerms) -> str:
    return f"{usd_text(plan.refundable)} to the card, {plan.days_left} days left"
