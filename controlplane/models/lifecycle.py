"""The customer's lifecycle around the money: terms versions and who accepted which, notices sent
about scheduled price changes, budget alerts sent (each threshold once per period), and goodwill
credits operators post in one batch after a disruption."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.extensions import db
from controlplane.models.types import BigId, JsonType, Money, UTCDateTime, utcnow

TERMS_VERSION_MAX = 32
TERMS_SUMMARY_MAX = 2000
TERMS_URL_MAX = 500


class TermsVersion(db.Model):
    """A version of the terms of service, in force from `effective_at` (announced 14 days ahead)."""

    __tablename__ = "terms_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(TERMS_VERSION_MAX), unique=True)
    summary: Mapped[str] = mapped_column(Text)  # what changed, ≤ TERMS_SUMMARY_MAX characters
    url: Mapped[str | None] = mapped_column(String(TERMS_URL_MAX), nullable=True)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The notice goes out in chunks of customers by id: the last id claimed, and when everyone was told.
    notified_through: Mapped[int] = mapped_column(Integer, default=0)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TermsAcceptance(db.Model):
    __tablename__ = "terms_acceptances"
    __table_args__ = (UniqueConstraint("user_id", "terms_version_id", name="uq_terms_acceptances_user_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    terms_version_id: Mapped[int] = mapped_column(ForeignKey("terms_versions.id"))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


class PriceNotice(db.Model):
    """One account told about one scheduled price: the row is claimed before the email goes, so a
    second run never sends it twice."""

    __tablename__ = "price_notices"
    __table_args__ = (UniqueConstraint("model_price_id", "account_id", name="uq_price_notices_price_account"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_price_id: Mapped[int] = mapped_column(Integer, index=True)  # no foreign key: a cancelled change keeps its notices
    model: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)


class BudgetAlert(db.Model):
    """A budget threshold crossed in a period: `subject` is `key:<id>:day`, `key:<id>:month` or
    `member:<account>:<user>`; `period` is the UTC day or month the window counts."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("subject", "period", "percent", name="uq_budget_alerts_once"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    subject: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(10))
    percent: Mapped[int] = mapped_column(Integer)
    spent: Mapped[int] = mapped_column(Money)
    budget: Mapped[int] = mapped_column(Money)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)


class DisruptionCredit(db.Model):
    """A batch of goodwill credits for a disruption: the period, what it hit, and the preview's
    fingerprint, unique, so posting the same preview twice credits once."""

    __tablename__ = "disruption_credits"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    models: Mapped[list] = mapped_column(JsonType, default=list)
    channel_ids: Mapped[list] = mapped_column(JsonType, default=list)
    reason: Mapped[str] = mapped_column(Text)
    accounts: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Money, default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DisruptionCreditLine(db.Model):
    __tablename__ = "disruption_credit_lines"
    __table_args__ = (UniqueConstraint("credit_id", "account_id", name="uq_disruption_credit_lines_account"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    credit_id: Mapped[int] = mapped_column(ForeignKey("disruption_credits.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    usage: Mapped[int] = mapped_column(Money)  # µ$ spent on what the disruption hit, in the 30 days before
    amount: Mapped[int] = mapped_column(Money)
    ledger_entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_entries.id"))
