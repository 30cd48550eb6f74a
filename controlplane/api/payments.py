"""Admin API: card payments with their Stripe ids, and the queue of customers' requests to refund a
top-up's unused part to the card (the terms computed now; approving refunds through Stripe once)."""
from __future__ import annotations

from datetime import datetime

from flask import jsonify, request
from sqlalchemy import select

from controlplane.api import READERS, WRITERS, actor, payload, route
from controlplane.api.schema import BOOL, INT, PAGE, STR, described, obj
from controlplane.extensions import db
from controlplane.models import Payment, RefundRequest, RefundRequestStatus
from controlplane.queries.pagination import page_number, paginate, per_page, row_id
from controlplane.services import card_refunds
from controlplane.services.base import NotFound

TAG = "payments"
STATUSES = ("pending", "paid", "failed")


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def payment_dict(p: Payment) -> dict:
    return {"id": p.id, "account_id": p.account_id, "user_id": p.user_id, "amount_micro_usd": p.amount, "currency": p.currency,
            "status": p.status, "payment_method": p.payment_method, "checkout_session_id": p.checkout_session_id,
            "payment_intent_id": p.payment_intent_id, "credit_entry_id": p.credit_entry_id, "refunded_micro_usd": p.refunded_amount,
            "disputed_micro_usd": p.disputed_amount, "dispute_id": p.dispute_id, "flagged_at": _when(p.flagged_at),
            "created_at": _when(p.created_at), "paid_at": _when(p.paid_at), "failed_at": _when(p.failed_at)}


def refund_request_dict(r: RefundRequest) -> dict:
    out = {"id": r.id, "account_id": r.account_id, "payment_id": r.payment_id, "requested_by": r.requested_by, "reason": r.reason,
           "status": r.status, "amount_micro_usd": r.amount, "stripe_refund_id": r.stripe_refund_id, "decided_by": r.decided_by,
           "decision_note": r.decision_note, "created_at": _when(r.created_at), "decided_at": _when(r.decided_at)}
    if r.status == RefundRequestStatus.PENDING.value:
        plan = card_refunds.terms(r.payment)
        out["terms"] = {"unused_micro_usd": plan.unused, "refundable_micro_usd": plan.refundable, "days_left": plan.days_left,
                        "refusal": plan.refusal or None}
    return out


@route("/v1/payments", "GET", summary="Card payments, newest first, with their Stripe ids", tag=TAG, roles=READERS,
       query=dict(status=described(STR, "pending, paid or failed"), flagged=described(BOOL, "disputed ones only"), account_id=INT, **PAGE))
def list_payments():
    query = select(Payment).order_by(Payment.id.desc())
    if request.args.get("status") in STATUSES:
        query = query.where(Payment.status == request.args["status"])
    if request.args.get("flagged") in ("1", "true"):
        query = query.where(Payment.flagged_at.is_not(None))
    if row_id(request.args.get("account_id")):
        query = query.where(Payment.account_id == row_id(request.args["account_id"]))
    page = paginate(query, page_number(request.args), per_page(request.args))
    return jsonify(data=[payment_dict(p) for p in page.items], **page.meta())


@route("/v1/payments/<int:payment_id>", "GET", summary="One card payment", tag=TAG, roles=READERS)
def get_payment(payment_id: int):
    found = db.session.get(Payment, payment_id)
    if found is None:
        raise NotFound(f"payment {payment_id}")
    return jsonify(payment_dict(found))


@route("/v1/card-refund-requests", "GET", summary="Customers' requests to refund a top-up to the card, newest first; pending ones "
       "carry the terms computed now", tag=TAG, roles=READERS, query=dict(status=described(STR, "pending, approved or declined"), **PAGE))
def list_refund_requests():
    query = select(RefundRequest).order_by(RefundRequest.id.desc())
    if request.args.get("status") in [s.value for s in RefundRequestStatus]:
        query = query.where(RefundRequest.status == request.args["status"])
    page = paginate(query, page_number(request.args), per_page(request.args))
    return jsonify(data=[refund_request_dict(r) for r in page.items], **page.meta())


@route("/v1/card-refund-requests/<int:refund_request_id>/approve", "POST", summary="Refund the unused part to the card through Stripe "
       "(once) and post the ledger entry", tag=TAG, roles=WRITERS, errors={409: "Not refundable now, or decided already",
                                                                            502: "Stripe did not refund"})
def approve_refund_request(refund_request_id: int):
    return jsonify(refund_request_dict(card_refunds.approve(actor(), refund_request_id)))


@route("/v1/card-refund-requests/<int:refund_request_id>/decline", "POST", summary="Decline a refund request; the customer sees the note",
       tag=TAG, roles=WRITERS, body=obj(("note",), note=described(STR, "why (the customer sees it)")), errors={409: "Decided already"})
def decline_refund_request(refund_request_id: int):
    return jsonify(refund_request_dict(card_refunds.decline(actor(), refund_request_id, str(payload().get("note") or ""))))
