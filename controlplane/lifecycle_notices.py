"""What a customer is told ahead of a change: scheduled price changes to models they used in the
last 30 days, and a new version of the terms. The dashboard reads these on every visit; the workers
(workers/notices.py) email the same facts once."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ModelPrice, TermsVersion, UsageRollup, utcnow
from controlplane.services.prices import current_price

USED_WITHIN = timedelta(days=30)


@dataclass(frozen=True)
class PriceChange:
    model: str
    effective_from: datetime
    input_before: int | None  # µ$ per 1M tokens; None: the model had no price
    output_before: int | None
    input_after: int
    output_after: int
    price_id: int


def scheduled_prices(now: datetime | None = None) -> list[ModelPrice]:
    now = now or utcnow()
    return list(db.session.scalars(select(ModelPrice).where(ModelPrice.effective_from > now).order_by(ModelPrice.effective_from, ModelPrice.model)))


def change_of(row: ModelPrice) -> PriceChange:
    before = current_price(row.model, row.effective_from - timedelta(microseconds=1))
    return PriceChange(row.model, row.effective_from, before.input if before else None, before.output if before else None, row.input, row.output,
                       row.id)


def models_used(where, now: datetime | None = None) -> set[str]:
    """Models used in the last 30 days under `where` (a clause on the usage rollups)."""
    since = (now or utcnow()) - USED_WITHIN
    return set(db.session.scalars(select(UsageRollup.model).where(where, UsageRollup.bucket >= since).distinct()))


def price_changes_for(where, now: datetime | None = None) -> list[PriceChange]:
    """Scheduled price changes to the models used in the last 30 days under `where`."""
    rows = scheduled_prices(now)
    if not rows:
        return []
    used = models_used(where, now)
    return [change_of(row) for row in rows if row.model in used]


def upcoming_terms(now: datetime | None = None) -> TermsVersion | None:
    now = now or utcnow()
    return db.session.scalar(select(TermsVersion).where(TermsVersion.effective_at > now).order_by(TermsVersion.effective_at).limit(1))
