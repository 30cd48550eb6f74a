"""Refunds under the terms: a request's charge (full or partial, once), a top-up's unused part
(within 14 days; later only when an admin overrides with a reason), and goodwill credit.

Each is one ledger entry plus a `Refund` row saying why, committed with its audit entry and then
applied to the live balance in Redis. The user sees the entry and its reason in their billing history.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from controlplane import ledger, validation
from controlplane.extensions import db
from controlplane.models import Account, ApiKey, EntryKind, LedgerEntry, Refund, RefundKind, RequestLog, utcnow
from controlplane.runtime import runtime
from controlplane.services.base import Actor, NotFound, ServiceError, audit
from controlplane.services.billing import apply_live
from relay.pricing import micro_to_usd
from relay.quota import account_key

log = logging.getLogger(__name__)

TOPUP_WINDOW = timedelta(days=14)


def describe(row: Refund) -> dict:
    return {"id": row.id, "kind": row.kind, "account_id": row.account_id, "request_id": row.request_id,
            "topup_entry_id": row.topup_entry_id, "ledger_entry_id": row.ledger_entry_id, "amount_micro_usd": row.amount,
            "reason": row.reason, "operator_id": row.operator_id, "created_at": row.created_at.isoformat() if row.created_at else None}


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why (the user sees this reason).", "reason")
    return reason


def _record(actor: Actor, account_id: int, kind: RefundKind, post_entry: Callable[[], LedgerEntry], amount: int, reason: str,
            **refs) -> Refund:
    """Post the entry and the refund row, audit, commit — a duplicate is refused by the database's
    unique constraints even when two operators pass the checks at once — then apply it live."""
    try:
        entry = post_entry()
        db.session.flush()
        row = Refund(kind=str(kind), account_id=account_id, ledger_entry_id=entry.id, amount=amount, reason=reason, operator_id=actor.id, **refs)
        db.session.add(row)
        db.session.flush()
        audit(actor, f"refund.{kind}", "account", account_id, after=describe(row))
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise ServiceError("This was refunded already; it can be refunded only once.", status=409) from None
    apply_live(account_id, entry.amount)
    return row


@dataclass(frozen=True)
class RequestRefund:
    """What refunding one request would do."""

    log: RequestLog
    charge: LedgerEntry
    previous: Refund | None

    @property
    def charged(self) -> int:
        return -self.charge.amount


def request_refund(request_id: str) -> RequestRefund:
    request_id = (request_id or "").strip()
    log = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
    if log is None:
        raise ServiceError(f"No logged request {request_id} (a request shows up a few seconds after it ends).", "request_id", status=404)
    charge = db.session.scalar(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.CHARGE.value, LedgerEntry.request_id == request_id))
    if charge is None:
        raise ServiceError("This request was not charged, so there is nothing to refund.", "request_id", status=409)
    previous = db.session.scalar(select(Refund).where(Refund.kind == RefundKind.REQUEST.value, Refund.request_id == request_id))
    return RequestRefund(log, charge, previous)


def refund_request(actor: Actor, request_id: str, amount: str | None, reason: str) -> Refund:
    """Give back all (amount empty) or part of what one request was charged, once."""
    plan = request_refund(request_id)
    if plan.previous is not None:
        raise ServiceError(f"Request {plan.log.request_id} was refunded already ({micro_to_usd(plan.previous.amount)}); "
                           "a request is refunded only once.", "request_id", status=409)
    micro = plan.charged if amount in (None, "") else validation.usd(amount, "amount", allow_zero=False)
    if micro > plan.charged:
        raise ServiceError(f"At most what was charged: {micro_to_usd(plan.charged)}.", "amount")
    reason = _reason(reason)

    key_id = plan.charge.api_key_id

    def post_entry():
        if key_id is not None:  # the key's spend counts charges less refunds, here and in Redis below
            db.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(spent=ApiKey.spent - micro))
        return ledger.post(plan.charge.account_id, EntryKind.REFUND, micro, request_id=plan.log.request_id, operator_id=actor.id,
                           api_key_id=key_id, reference_id=plan.charge.id, reason=reason)

    row = _record(actor, plan.charge.account_id, RefundKind.REQUEST, post_entry, micro, reason, request_id=plan.log.request_id)
    if key_id is not None:
        apply_key_refund(plan.charge.account_id, key_id, micro)
    return row


def apply_key_refund(account_id: int, key_id: int, amount: int) -> None:
    """Give a key's credit limit back what a refund returned (only where Redis knows the key: an
    unknown key is seeded from SQL, which already has it)."""
    try:
        runtime().quota.add_key_spent(account_id, key_id, -amount)
    except Exception:
        log.exception("live spend of key %s not updated; run scripts/reconcile.py --fix", key_id)


@dataclass(frozen=True)
class TopupRefund:
    """What refunding one top-up would do: its unused part, and whether it is past the window."""

    entry: LedgerEntry
    unused: int
    late: bool
    previous: Refund | None


def available_balance(account: Account) -> int:
    """Spendable now: the lower of the settled SQL balance and the live one less open holds."""
    rt = runtime()
    if not rt.redis.hexists(account_key(account.id), "bal"):
        return account.balance
    live, held = rt.quota.account(account.id)
    return min(account.balance, live - held)


def topup_refund(entry_id: int, now: datetime | None = None) -> TopupRefund:
    """Money is spent oldest first, so what is left of the balance belongs to the newest credits:
    the unused part of a top-up is what remains after the credits that came after it."""
    entry = db.session.get(LedgerEntry, entry_id)
    if entry is None or entry.kind != EntryKind.TOPUP.value:
        raise NotFound(f"top-up {entry_id}")
    now = now or utcnow()
    account = db.session.get(Account, entry.account_id)
    newer = db.session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.account_id == entry.account_id, LedgerEntry.id > entry.id, LedgerEntry.amount > 0))
    unused = max(0, min(entry.amount, available_balance(account) - int(newer)))
    previous = db.session.scalar(select(Refund).where(Refund.topup_entry_id == entry.id))
    return TopupRefund(entry, unused, now - entry.created_at > TOPUP_WINDOW, previous)


def refund_topup(actor: Actor, entry_id: int, reason: str, override: bool = False) -> Refund:
    """Return a top-up's unused part to the customer (the money leaves their balance).

    `override` is an admin's decision to refund past the 14-day window; the caller checks the role.
    """
    plan = topup_refund(entry_id)
    if plan.previous is not None:
        raise ServiceError("This top-up was refunded already; a top-up is refunded only once.", status=409)
    reason = _reason(reason)
    if plan.late and not override:
        raise ServiceError("This top-up is older than 14 days. The terms refund it only when an admin overrides, with a reason.", "override", status=403)
    if plan.unused <= 0:
        raise ServiceError("Nothing of this top-up is unused, so there is nothing to refund.", status=409)
    return _record(actor, plan.entry.account_id, RefundKind.TOPUP,
                   lambda: ledger.post(plan.entry.account_id, EntryKind.REFUND, -plan.unused, operator_id=actor.id, reference_id=plan.entry.id,
                                       reason=reason),
                   plan.unused, reason, topup_entry_id=plan.entry.id)


def goodwill(actor: Actor, account: Account, usd: str, reason: str) -> Refund:
    """Credit given as a courtesy (a service disruption, a misunderstanding)."""
    micro = validation.usd(usd, "amount", allow_zero=False)
    reason = _reason(reason)
    return _record(actor, account.id, RefundKind.GOODWILL,
                   lambda: ledger.post(account.id, EntryKind.GOODWILL, micro, operator_id=actor.id, reason=reason), micro, reason)
