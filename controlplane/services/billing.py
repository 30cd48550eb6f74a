"""Money an operator moves: top-ups and adjustments. Each is one ledger entry, audited, and
applied to the live balance in Redis once SQL has committed it."""
from __future__ import annotations

import logging

from controlplane import ledger, validation
from controlplane.extensions import db
from controlplane.models import Account, EntryKind, LedgerEntry
from controlplane.runtime import runtime
from controlplane.services.base import Actor, ServiceError, audit, commit

log = logging.getLogger(__name__)


def entry_dict(entry: LedgerEntry) -> dict:
    return {
        "id": entry.id,
        "account_id": entry.account_id,
        "kind": entry.kind,
        "amount_micro_usd": entry.amount,
        "request_id": entry.request_id,
        "operator_id": entry.operator_id,
        "reason": entry.reason,
        "created_at": entry.created_at.isoformat() if entry.created_at else None,
    }


def apply_live(account_id: int, amount: int) -> None:
    """Tell Redis about a committed ledger change; reconcile repairs it if Redis is unreachable."""
    balance = ledger.stored_balance(account_id)
    try:
        runtime().quota.credit(account_id, amount, balance)
    except Exception:
        log.exception("live balance of account %s not updated; run scripts/reconcile.py --fix", account_id)


def credit(actor: Actor, account: Account, kind: EntryKind, amount: int, reason: str, *,
           request_id: str | None = None, reference_id: int | None = None, action: str | None = None) -> LedgerEntry:
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why (the user sees this reason).", "reason")
    entry = ledger.post(account.id, kind, amount, operator_id=actor.id, reason=reason, request_id=request_id, reference_id=reference_id)
    db.session.flush()
    audit(actor, action or f"ledger.{kind}", "account", account.id, after=entry_dict(entry))
    commit(publish=False)
    apply_live(account.id, amount)
    return entry


def topup(actor: Actor, account: Account, usd: str, reason: str) -> LedgerEntry:
    amount = validation.usd(usd, "amount", allow_zero=False)
    entry = credit(actor, account, EntryKind.TOPUP, amount, reason)
    from controlplane.services import notices  # user console: an email receipt when SMTP is set

    notices.receipt(entry.id)
    return entry


def adjust(actor: Actor, account: Account, usd: str, reason: str) -> LedgerEntry:
    amount = validation.usd(usd, "amount", allow_zero=False, allow_negative=True)
    return credit(actor, account, EntryKind.ADJUSTMENT, amount, reason)


def live_balance(account_id: int) -> tuple[int, int]:
    """(balance with settled charges applied, open holds) from Redis."""
    return runtime().quota.account(account_id)
