"""Disruption credits: after a disruption of at least 72 hours, every account that used what it hit
gets goodwill credit in proportion to its usage, posted in one idempotent batch.

An account's credit is what it spent on the affected models or channels in the 30 days before the
disruption began, scaled to the disruption's length: usage × (length ÷ 30 days), rounded down to
the micro-dollar. The preview and the post compute the same thing from the same rollups (history
before the disruption does not change); a batch is identified by its period and what it hit, so
posting it twice credits once.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import Account, Channel, DisruptionCredit, DisruptionCreditLine, EntryKind, UsageRollup, utcnow
from controlplane.services.base import Actor, NotFound, ServiceError, audit
from controlplane.services.billing import apply_live

log = logging.getLogger(__name__)
MIN_LENGTH = timedelta(hours=72)  # the terms credit disruptions of at least this long
MAX_LENGTH = timedelta(days=30)
LOOKBACK = timedelta(days=30)
MAX_MODELS = 100
MAX_CHANNELS = 100
MODEL_MAX_LENGTH = 200


@dataclass(frozen=True)
class CreditLine:
    account_id: int
    name: str
    usage: int  # µ$ spent on what the disruption hit in the 30 days before it
    amount: int  # µ$ credited


@dataclass(frozen=True)
class CreditPlan:
    starts_at: datetime
    ends_at: datetime
    models: tuple[str, ...]
    channel_ids: tuple[int, ...]
    lines: tuple[CreditLine, ...]

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def fingerprint(self) -> str:
        text = "|".join([self.starts_at.isoformat(), self.ends_at.isoformat(), ",".join(self.models), ",".join(map(str, self.channel_ids))])
        return hashlib.sha256(text.encode()).hexdigest()


def _scope(models, channel_ids) -> tuple[tuple[str, ...], tuple[int, ...]]:
    models = tuple(sorted({str(m).strip() for m in (models or ()) if str(m).strip()}))
    if len(models) > MAX_MODELS or any(len(m) > MODEL_MAX_LENGTH for m in models):
        raise ServiceError(f"At most {MAX_MODELS} models, each at most {MODEL_MAX_LENGTH} characters.", "models")
    try:
        channel_ids = tuple(sorted({int(c) for c in (channel_ids or ())}))
    except (TypeError, ValueError):
        raise ServiceError("Channels are given by their ids.", "channels") from None
    if len(channel_ids) > MAX_CHANNELS:
        raise ServiceError(f"At most {MAX_CHANNELS} channels.", "channels")
    known = set(db.session.scalars(select(Channel.id).where(Channel.id.in_(channel_ids)))) if channel_ids else set()
    if set(channel_ids) - known:
        raise ServiceError(f"No channel {min(set(channel_ids) - known)}.", "channels")
    if not models and not channel_ids:
        raise ServiceError("Choose the models or channels the disruption hit.", "models")
    return models, channel_ids


def _period(starts_at: datetime | None, ends_at: datetime | None, now: datetime) -> None:
    if starts_at is None or ends_at is None:
        raise ServiceError("Give when the disruption began and ended.", "starts_at" if starts_at is None else "ends_at")
    if ends_at > now:
        raise ServiceError("The disruption must be over: credit is computed once it has ended.", "ends_at")
    if ends_at - starts_at < MIN_LENGTH:
        raise ServiceError("The terms credit disruptions of 72 hours or more; for a shorter one give goodwill credit per account.", "ends_at")
    if ends_at - starts_at > MAX_LENGTH:
        raise ServiceError("At most 30 days at once: split a longer disruption into periods.", "ends_at")


def preview(starts_at: datetime | None, ends_at: datetime | None, models=(), channel_ids=(), now: datetime | None = None) -> CreditPlan:
    """Each affected account's credit (largest first); nothing is written."""
    _period(starts_at, ends_at, now or utcnow())
    models, channel_ids = _scope(models, channel_ids)
    R = UsageRollup
    hit = [c for c in (R.model.in_(models) if models else None, R.channel_id.in_(channel_ids) if channel_ids else None) if c is not None]
    usage = func.sum(R.cost)
    rows = db.session.execute(
        select(R.account_id, Account.name, usage).join(Account, Account.id == R.account_id)
        .where(R.bucket >= starts_at - LOOKBACK, R.bucket < starts_at, or_(*hit), Account.closed_at.is_(None))
        .group_by(R.account_id, Account.name).having(usage > 0)).all()
    length, lookback = int((ends_at - starts_at).total_seconds()), int(LOOKBACK.total_seconds())
    lines = [CreditLine(int(a), n, int(u), int(u) * length // lookback) for a, n, u in rows]
    lines = sorted((line for line in lines if line.amount > 0), key=lambda line: (-line.amount, line.account_id))
    return CreditPlan(starts_at, ends_at, models, channel_ids, tuple(lines))


def describe(row: DisruptionCredit) -> dict:
    return {"id": row.id, "starts_at": row.starts_at.isoformat(), "ends_at": row.ends_at.isoformat(), "models": row.models,
            "channel_ids": row.channel_ids, "reason": row.reason, "accounts": row.accounts, "total_micro_usd": row.total,
            "created_by": row.created_by, "created_at": row.created_at.isoformat() if row.created_at else None}


def existing(plan: CreditPlan) -> DisruptionCredit | None:
    return db.session.scalar(select(DisruptionCredit).where(DisruptionCredit.fingerprint == plan.fingerprint))


def post(actor: Actor, plan: CreditPlan, reason: str, expected_total: int | None = None) -> DisruptionCredit:
    """Credit every line of `plan` in one transaction: a ledger entry per account and one audit
    entry for the batch. The same period and scope post once; `expected_total` (what the operator
    saw in the preview) must still be the total."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why (customers see this reason next to the credit).", "reason")
    if len(reason) > 500:
        raise ServiceError("At most 500 characters.", "reason")
    if not plan.lines:
        raise ServiceError("No account used what the disruption hit in the 30 days before it: there is nothing to credit.", status=409)
    if expected_total is not None and expected_total != plan.total:
        raise ServiceError("The amounts changed since the preview: preview again.", status=409)
    previous = existing(plan)
    if previous is not None:
        raise ServiceError(f"This disruption was credited already (batch {previous.id}).", status=409)
    try:
        batch = DisruptionCredit(fingerprint=plan.fingerprint, starts_at=plan.starts_at, ends_at=plan.ends_at, models=list(plan.models),
                                 channel_ids=list(plan.channel_ids), reason=reason, accounts=len(plan.lines), total=plan.total, created_by=actor.id)
        db.session.add(batch)
        db.session.flush()
        for line in plan.lines:
            entry = ledger.post(line.account_id, EntryKind.GOODWILL, line.amount, operator_id=actor.id, reference_id=batch.id, reason=reason)
            db.session.flush()
            db.session.add(DisruptionCreditLine(credit_id=batch.id, account_id=line.account_id, usage=line.usage, amount=line.amount,
                                                ledger_entry_id=entry.id))
        audit(actor, "disruption.credit", "disruption_credit", batch.id, after=describe(batch))
        db.session.commit()
    except IntegrityError:  # another operator posted the same batch a moment earlier
        db.session.rollback()
        raise ServiceError("This disruption was credited already.", status=409) from None
    for line in plan.lines:
        apply_live(line.account_id, line.amount)
    return batch


def batch_by_id(credit_id: int) -> DisruptionCredit:
    row = db.session.get(DisruptionCredit, credit_id)
    if row is None:
        raise NotFound(f"disruption credit {credit_id}")
    return row


def lines_of(credit_id: int) -> list[tuple[DisruptionCreditLine, str]]:
    return list(db.session.execute(select(DisruptionCreditLine, Account.name).join(Account, Account.id == DisruptionCreditLine.account_id)
                                   .where(DisruptionCreditLine.credit_id == credit_id).order_by(DisruptionCreditLine.amount.desc())).all())
