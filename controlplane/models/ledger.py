"""The ledger (append-only money movements) and refunds (what an operator gave back, and why)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.extensions import db
from controlplane.models.types import BigId, Money, StrEnum, UTCDateTime, utcnow


class EntryKind(StrEnum):
    TOPUP = "topup"
    CHARGE = "charge"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"
    REDEMPTION = "redemption"
    GOODWILL = "goodwill"
    DISPUTE = "dispute"  # a card payment the cardholder disputed: its credit taken back


class LedgerEntry(db.Model):
    __tablename__ = "ledger_entries"
    # One charge per request, one refund per request: the database refuses a second.
    __table_args__ = (UniqueConstraint("kind", "request_id", name="uq_ledger_kind_request"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Money)  # µ$, positive credits, negative debits
    request_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    api_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    reference_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # e.g. the top-up a refund undoes
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class RefundKind(StrEnum):
    REQUEST = "request"
    TOPUP = "topup"
    GOODWILL = "goodwill"


class Refund(db.Model):
    __tablename__ = "refunds"
    # A top-up is refunded at most once (request refunds are unique through the ledger already).
    __table_args__ = (UniqueConstraint("topup_entry_id", name="uq_refunds_topup_entry"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    request_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    topup_entry_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    ledger_entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_entries.id"))
    amount: Mapped[int] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(Text)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
