"""What Stripe's verified webhook events do to money. Each event is handled in one transaction with
the row that records its id, so a redelivered event changes nothing; and each effect is guarded by
a compare-and-set on the payment (pending → paid; refunded and disputed amounts only move forward),
so two different events saying the same thing, or events arriving out of order, change nothing twice.

- checkout.session.completed (paid) / checkout.session.async_payment_succeeded: credit the top-up
  once (a ledger entry `topup` with request id `pay_<payment id>`, unique), issue its invoice.
- checkout.session.completed (unpaid: a method that settles later): remember the payment intent.
- checkout.session.async_payment_failed / checkout.session.expired: the payment is failed; nothing
  was credited.
- charge.refunded: the newly refunded part leaves the balance once (a `refund` entry).
- charge.dispute.created: the disputed part leaves the balance (a `dispute` entry), the payment is
  flagged and the operators are told.
- charge.dispute.closed: won (or an inquiry closed without a chargeback): the part held back comes
  back once (a positive `dispute` entry) and the flag is lifted; lost: the money stays taken back
  and the payment stays flagged, with the outcome recorded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import (
    EntryKind, Payment, PaymentStatus, Refund, RefundKind, RefundRequest, RefundRequestStatus, StripeEvent, utcnow,
)
from controlplane.services import invoices, notices, payment_settings
from controlplane.services.base import Actor, ServiceError, audit
from controlplane.services.billing import apply_live
from controlplane.stripe_gateway import MICRO_PER_CENT, REFERENCE, CheckoutSession, Event, StripeUnavailable, session_from_event
from relay.pricing import usd_text

log = logging.getLogger(__name__)
STRIPE = Actor.system("stripe")
HANDLED = ("checkout.session.completed", "checkout.session.async_payment_succeeded", "checkout.session.async_payment_failed",
           "checkout.session.expired", "charge.refunded", "charge.dispute.created", "charge.dispute.closed")
# Stripe's closing statuses in which the cardholder's bank kept nothing: the held-back credit returns.
DISPUTE_RELEASED = ("won", "warning_closed")
ENDED = {"checkout.session.async_payment_failed": "payment failed", "checkout.session.expired": "checkout expired unpaid"}


class RetryLater(Exception):
    """The event is about a payment not known here yet (an earlier event has not arrived): Stripe is
    answered with an error so it delivers this one again later."""


@dataclass
class Effects:
    """What a handled event did, for the steps after the commit (live balance, emails)."""

    outcome: str
    live: list[tuple[int, int]] = field(default_factory=list)  # (account id, µ$)
    invoice_id: int | None = None
    alert_payment_id: int | None = None


def _payment_by_reference(obj: dict) -> Payment | None:
    raw = (obj.get("metadata") or {}).get(REFERENCE)
    try:
        return db.session.get(Payment, int(raw)) if raw else None
    except (TypeError, ValueError):
        return None


def _payment_for_session(session: CheckoutSession, obj: dict) -> Payment | None:
    found = db.session.scalar(select(Payment).where(Payment.checkout_session_id == session.id))
    if found is None:
        found = _payment_by_reference(obj)
        if found is not None and found.checkout_session_id not in (None, session.id):
            return None  # a reference to another session's payment: not this one
    return found


def _payment_for_charge(obj: dict) -> Payment | None:
    intent = obj.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    found = db.session.scalar(select(Payment).where(Payment.payment_intent_id == intent)) if intent else None
    if found is None:
        found = _payment_by_reference(obj)
        if found is not None and found.payment_intent_id not in (None, intent):
            return None  # a reference to a payment paid through another intent: not this charge's
    return found


def credit(payment: Payment, session: CheckoutSession, method: str | None) -> Effects:
    """Credit a paid session's payment, once. The caller commits."""
    if session.payment_status != "paid":
        return Effects("not paid yet")
    if session.amount_micro != payment.amount:
        log.error("payment %s: Stripe charged %s, the payment is for %s; not credited", payment.id, session.amount_total, payment.amount)
        return Effects("amount differs from the payment: not credited (see the reconciliation page)")
    won = db.session.execute(update(Payment).where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING.value).values(
        status=PaymentStatus.PAID.value, paid_at=utcnow(), checkout_session_id=session.id,
        payment_intent_id=session.payment_intent or payment.payment_intent_id, payment_method=method or payment.payment_method or "card"))
    if won.rowcount != 1:
        return Effects("credited already" if payment.status == PaymentStatus.PAID.value else f"payment is {payment.status}")
    db.session.refresh(payment)
    entry = ledger.post(payment.account_id, EntryKind.TOPUP, payment.amount, request_id=f"pay_{payment.id}", reference_id=payment.id,
                        reason=f"Card payment {session.id}")
    db.session.flush()
    payment.credit_entry_id = entry.id
    invoice = invoices.issue(payment, payment_settings.load())
    audit(STRIPE, "payment.credited", "account", payment.account_id,
          after={"payment_id": payment.id, "amount_micro_usd": payment.amount, "ledger_entry_id": entry.id, "invoice": invoice.code,
                 "checkout_session_id": session.id, "payment_intent_id": payment.payment_intent_id})
    return Effects(f"credited {usd_text(payment.amount)}", live=[(payment.account_id, payment.amount)], invoice_id=invoice.id)


def _on_session(event: Event) -> Effects:
    session = session_from_event(event.object)
    payment = _payment_for_session(session, event.object)
    if payment is None:
        return Effects("not a Switchboard payment: ignored")
    if session.payment_intent and payment.payment_intent_id is None:
        payment.payment_intent_id = session.payment_intent  # later charge events find the payment by it
        payment.checkout_session_id = payment.checkout_session_id or session.id
    if event.type in ENDED:
        won = db.session.execute(update(Payment).where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING.value)
                                 .values(status=PaymentStatus.FAILED.value, failed_at=utcnow()))
        if won.rowcount != 1:
            return Effects(f"payment is {payment.status} already")
        audit(STRIPE, "payment.failed", "account", payment.account_id, after={"payment_id": payment.id, "checkout_session_id": session.id,
                                                                               "why": ENDED[event.type]})
        return Effects(f"{ENDED[event.type]}: nothing credited")
    return credit(payment, session, _method(session))


def _method(session: CheckoutSession) -> str | None:
    """The payment method used, for the invoice; when Stripe cannot say now, the invoice says "card"
    (crediting never waits on this)."""
    if session.payment_status != "paid" or not session.payment_intent:
        return None
    try:
        return payment_settings.load().gateway().payment_method_used(session.payment_intent)
    except StripeUnavailable as error:
        log.warning("payment method of %s not known: %s", session.payment_intent, error)
        return None


def _take_back(payment: Payment, kind: EntryKind, amount: int, reason: str, request_id: str | None = None) -> None:
    entry = ledger.post(payment.account_id, kind, -amount, reference_id=payment.credit_entry_id, request_id=request_id, reason=reason)
    db.session.flush()
    if kind == EntryKind.REFUND and payment.credit_entry_id is not None and db.session.scalar(
            select(Refund.id).where(Refund.topup_entry_id == payment.credit_entry_id)) is None:
        # The top-up counts as refunded: its unused part is not refunded a second time, by card or to the balance.
        db.session.add(Refund(kind=RefundKind.TOPUP.value, account_id=payment.account_id, topup_entry_id=payment.credit_entry_id,
                              ledger_entry_id=entry.id, amount=amount, reason=reason))


def _on_refund(event: Event) -> Effects:
    payment = _payment_for_charge(event.object)
    if payment is None:
        raise RetryLater("charge of a payment not known here yet")
    total = min(int(event.object.get("amount_refunded") or 0) * MICRO_PER_CENT, payment.amount)
    old = payment.refunded_amount
    if total <= old:
        return Effects("nothing newly refunded")
    won = db.session.execute(update(Payment).where(Payment.id == payment.id, Payment.refunded_amount == old).values(refunded_amount=total))
    if won.rowcount != 1:
        return Effects("refund recorded already")
    delta = total - old
    _take_back(payment, EntryKind.REFUND, delta, f"Refunded to the card on Stripe (charge {event.object.get('id')})")
    pending = db.session.scalar(select(RefundRequest).where(RefundRequest.payment_id == payment.id,
                                                            RefundRequest.status == RefundRequestStatus.PENDING.value))
    if pending is not None:  # refunded from Stripe's dashboard meanwhile: the request is settled by it
        pending.status, pending.amount, pending.decided_at = RefundRequestStatus.APPROVED.value, delta, utcnow()
        pending.decision_note = "Refunded on Stripe"
    audit(STRIPE, "payment.refunded", "account", payment.account_id, after={"payment_id": payment.id, "amount_micro_usd": delta,
                                                                              "refunded_total_micro_usd": total})
    return Effects(f"refunded {usd_text(delta)}", live=[(payment.account_id, -delta)])


def _on_dispute(event: Event) -> Effects:
    payment = _payment_for_charge(event.object)
    if payment is None:
        raise RetryLater("dispute of a payment not known here yet")
    disputed = min(int(event.object.get("amount") or 0) * MICRO_PER_CENT, payment.amount - payment.refunded_amount)
    dispute_id = str(event.object.get("id") or "")
    won = db.session.execute(update(Payment).where(Payment.id == payment.id, Payment.dispute_id.is_(None)).values(
        dispute_id=dispute_id, disputed_amount=max(disputed, 0), flagged_at=utcnow()))
    if won.rowcount != 1:
        return Effects("dispute recorded already")
    live = []
    if disputed > 0:
        _take_back(payment, EntryKind.DISPUTE, disputed, f"Card payment disputed ({dispute_id}): the credit is held back",
                   request_id=dispute_id if len(dispute_id) <= 40 else None)
        live = [(payment.account_id, -disputed)]
    audit(STRIPE, "payment.disputed", "account", payment.account_id, after={"payment_id": payment.id, "dispute_id": dispute_id,
                                                                              "amount_micro_usd": disputed})
    return Effects(f"disputed: {usd_text(disputed)} held back, account flagged", live=live, alert_payment_id=payment.id)


def _on_dispute_closed(event: Event) -> Effects:
    payment = _payment_for_charge(event.object)
    dispute_id = str(event.object.get("id") or "")
    if payment is None or payment.dispute_id is None:
        raise RetryLater("close of a dispute not recorded here yet")
    if payment.dispute_id != dispute_id:
        return Effects("not the dispute recorded for this payment: ignored")
    status = str(event.object.get("status") or "")
    if status not in DISPUTE_RELEASED:
        audit(STRIPE, "payment.dispute_lost", "account", payment.account_id, after={"payment_id": payment.id, "dispute_id": dispute_id,
                                                                                     "status": status[:40]})
        return Effects(f"dispute closed ({status[:40] or 'no status'}): {usd_text(payment.disputed_amount)} stays taken back")
    held = payment.disputed_amount
    won = db.session.execute(update(Payment).where(Payment.id == payment.id, Payment.dispute_id == dispute_id,
                                                   Payment.disputed_amount == held, Payment.flagged_at.is_not(None))
                             .values(disputed_amount=0, flagged_at=None))
    if won.rowcount != 1 or held <= 0:
        return Effects("dispute closed already")
    ledger.post(payment.account_id, EntryKind.DISPUTE, held, reference_id=payment.credit_entry_id,
                reason=f"Card dispute {dispute_id} closed in your favour: the credit held back is returned")
    audit(STRIPE, "payment.dispute_won", "account", payment.account_id, after={"payment_id": payment.id, "dispute_id": dispute_id,
                                                                                "amount_micro_usd": held})
    return Effects(f"dispute {status}: {usd_text(held)} returned, flag lifted", live=[(payment.account_id, held)])


def _effects(event: Event) -> Effects:
    if event.type.startswith("checkout.session."):
        return _on_session(event)
    if event.type == "charge.refunded":
        return _on_refund(event)
    if event.type == "charge.dispute.closed":
        return _on_dispute_closed(event)
    return _on_dispute(event)


def after_commit(effects: Effects) -> None:
    for account_id, amount in effects.live:
        apply_live(account_id, amount)
    if effects.invoice_id is not None:
        notices.invoice(effects.invoice_id)
    if effects.alert_payment_id is not None:
        notices.payment_alert(effects.alert_payment_id)


def handle(event: Event) -> str:
    """Apply one verified event once; returns what it did (for Stripe's delivery log).
    Raises RetryLater when it must come again later."""
    if db.session.get(StripeEvent, event.id) is not None:
        return "handled already"
    effects = _effects(event) if event.type in HANDLED else Effects("not an event Switchboard uses: ignored")
    db.session.add(StripeEvent(id=event.id, type=event.type[:64], outcome=effects.outcome[:200]))
    try:
        db.session.commit()
    except IntegrityError:  # the same event, delivered twice at once: the other delivery applied it
        db.session.rollback()
        return "handled already"
    after_commit(effects)
    return effects.outcome


def credit_from_stripe(actor: Actor, payment_id: int) -> str:
    """The operator's repair for a paid session whose webhook never arrived: Stripe is asked for the
    session and the payment is credited exactly as the webhook would have (once)."""
    payment = db.session.get(Payment, payment_id)
    if payment is None or not payment.checkout_session_id:
        raise ServiceError("No such card payment.", status=404)
    session = payment_settings.load().gateway().retrieve_session(payment.checkout_session_id)
    effects = credit(payment, session, _method(session))
    audit(actor, "payment.credit_from_stripe", "account", payment.account_id, after={"payment_id": payment.id, "outcome": effects.outcome})
    db.session.commit()
    after_commit(effects)
    return effects.outcome
