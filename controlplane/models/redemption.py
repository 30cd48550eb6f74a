"""Redemption codes: batches an operator generates (amount, count, expiry), each code redeemable
once. A code is stored as its SHA-256 (for lookup) and Fernet-encrypted (for the operator's CSV
export), never in clear."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.extensions import db
from controlplane.models.types import BigId, Money, UTCDateTime, utcnow


class RedemptionBatch(db.Model):
    __tablename__ = "redemption_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    amount: Mapped[int] = mapped_column(Money)  # µ$ each code credits
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    codes: Mapped[list["RedemptionCode"]] = relationship(back_populates="batch", order_by="RedemptionCode.id")


class RedemptionCode(db.Model):
    __tablename__ = "redemption_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("redemption_batches.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_encrypted: Mapped[str] = mapped_column(Text)
    last4: Mapped[str] = mapped_column(String(4))
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set once, by the one UPDATE that wins (WHERE redeemed_at IS NULL).
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    redeemed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    ledger_entry_id: Mapped[int | None] = mapped_column(BigId, nullable=True)

    batch: Mapped[RedemptionBatch] = relationship(back_populates="codes")
    redeemer = relationship("User", foreign_keys=[redeemed_by])
