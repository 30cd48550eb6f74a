"""Redemption codes: operators generate batches; a customer redeems a code into an account once.

Redeeming is one conditional UPDATE (`WHERE redeemed_at IS NULL`) plus a ledger entry of kind
`redemption`, in one transaction: of any number of simultaneous attempts exactly one wins.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from controlplane import ledger, validation
from controlplane.extensions import db
from controlplane.models import Account, EntryKind, LedgerEntry, RedemptionBatch, RedemptionCode, User, utcnow
from controlplane.runtime import runtime
from controlplane.services import notices
from controlplane.services.base import Actor, ServiceError, audit, commit
from controlplane.services.billing import apply_live, entry_dict

log = logging.getLogger(__name__)
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read and typed by people
GROUPS, GROUP_LEN = 4, 5  # 20 symbols × 5 bits = 100 bits: guessing is hopeless, throttled anyway
MAX_BATCH = 10_000


def normalise(code: str) -> str:
    return "".join(ch for ch in (code or "").upper() if ch.isalnum())


def code_hash(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LEN))
    return "-".join(raw[i:i + GROUP_LEN] for i in range(0, len(raw), GROUP_LEN))


def generate_batch(actor: Actor, name: str, amount_usd: str, count, expires_at: datetime | None = None) -> tuple[RedemptionBatch, list[str]]:
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise ServiceError("Name the batch (at most 100 characters), e.g. “Spring promotion”.", "name")
    amount = validation.usd(amount_usd, "amount", allow_zero=False)
    count = validation.non_negative_int(count, "count", minimum=1)
    if count > MAX_BATCH:
        raise ServiceError(f"At most {MAX_BATCH} codes per batch.", "count")
    if expires_at is not None and expires_at <= utcnow():
        raise ServiceError("The expiry must be in the future.", "expires_at")
    batch = RedemptionBatch(name=name, amount=amount, count=count, expires_at=expires_at, created_by=actor.id)
    db.session.add(batch)
    db.session.flush()
    cipher = runtime().cipher
    codes = [new_code() for _ in range(count)]
    db.session.add_all([RedemptionCode(batch_id=batch.id, code_hash=code_hash(c), code_encrypted=cipher.encrypt(c), last4=normalise(c)[-4:])
                        for c in codes])
    audit(actor, "redemption.generate", "redemption_batch", batch.id, after={"name": name, "amount_micro_usd": amount, "count": count,
                                                                             "expires_at": expires_at.isoformat() if expires_at else None})
    commit(publish=False)
    return batch, codes


def plaintext(row: RedemptionCode) -> str:
    return runtime().cipher.decrypt(row.code_encrypted)


def withdraw_unused(actor: Actor, batch: RedemptionBatch) -> int:
    """Disable every code of the batch nobody has redeemed yet."""
    done = db.session.execute(update(RedemptionCode).where(RedemptionCode.batch_id == batch.id, RedemptionCode.redeemed_at.is_(None),
                                                           RedemptionCode.disabled_at.is_(None)).values(disabled_at=utcnow())).rowcount
    audit(actor, "redemption.withdraw", "redemption_batch", batch.id, after={"withdrawn": done})
    commit(publish=False)
    return done


def _find(code: str) -> RedemptionCode:
    row = db.session.scalar(select(RedemptionCode).where(RedemptionCode.code_hash == code_hash(code)))
    if row is None or not normalise(code):
        raise ServiceError("That code is not valid. Check it and try again.", "code")
    if row.disabled_at is not None:
        raise ServiceError("This code has been withdrawn.", "code")
    if row.redeemed_at is not None:
        raise ServiceError("This code has already been redeemed.", "code", status=409)
    if row.batch.expires_at is not None and row.batch.expires_at <= utcnow():
        raise ServiceError(f"This code expired on {row.batch.expires_at:%Y-%m-%d}.", "code")
    return row


def _claim(actor: Actor, user: User, account: Account, code: str) -> LedgerEntry:
    row = _find(code)
    now = utcnow()
    won = db.session.execute(update(RedemptionCode).where(RedemptionCode.id == row.id, RedemptionCode.redeemed_at.is_(None),
                                                          RedemptionCode.disabled_at.is_(None))
                             .values(redeemed_at=now, redeemed_by=user.id, account_id=account.id)).rowcount
    if won != 1:
        db.session.rollback()
        raise ServiceError("This code has already been redeemed.", "code", status=409)
    amount = row.batch.amount
    entry = ledger.post(account.id, EntryKind.REDEMPTION, amount, reason=f"Redeemed code …{row.last4} ({row.batch.name})", reference_id=row.id)
    db.session.flush()
    db.session.execute(update(RedemptionCode).where(RedemptionCode.id == row.id).values(ledger_entry_id=entry.id))
    audit(actor, "redemption.redeem", "account", account.id, after=entry_dict(entry))
    commit(publish=False)
    return entry


def redeem(actor: Actor, user: User, account: Account, code: str) -> LedgerEntry:
    """Credit `account` with the code's amount, once. SQLite may report a lock when two writers
    collide: the attempt is retried and then sees the winner's redemption."""
    for attempt in range(5):
        try:
            entry = _claim(actor, user, account, code)
            break
        except OperationalError:
            db.session.rollback()
            if attempt == 4:
                raise ServiceError("The code could not be redeemed right now; try again.", "code", status=503) from None
    apply_live(account.id, entry.amount)
    notices.receipt(entry.id)
    return entry
