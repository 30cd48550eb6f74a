"""API keys: stored as a SHA-256 hash plus a display prefix; the secret is shown once."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.extensions import db
from controlplane.models.types import JsonType, Money, StrEnum, UTCDateTime, utcnow


class KeyStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    DELETED = "deleted"  # kept for the request logs that name it; never published to the relay


class KeyDecider(StrEnum):
    """Who disabled a key. An operator's decision stands until an operator reverses it; the key's
    owner can neither enable nor quietly re-disable it under their own name."""

    OWNER = "owner"
    OPERATOR = "operator"


class ApiKey(db.Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True, nullable=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    credit_limit: Mapped[int | None] = mapped_column(Money, nullable=True)  # µ$
    # Spend caps per UTC calendar day / month, µ$; enforced by the relay's hold (relay/quota.py).
    daily_budget: Mapped[int | None] = mapped_column(Money, nullable=True)
    monthly_budget: Mapped[int | None] = mapped_column(Money, nullable=True)
    # rate limits of this key (None: unlimited)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spent: Mapped[int] = mapped_column(Money, default=0)  # µ$, ingested charges
    models: Mapped[list] = mapped_column(JsonType, default=list)  # [] = whatever the group allows
    ip_allow: Mapped[list] = mapped_column(JsonType, default=list)  # addresses / CIDR ranges
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=KeyStatus.ENABLED.value)
    disabled_by: Mapped[str | None] = mapped_column(String(16), nullable=True)  # KeyDecider while disabled
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user = relationship("User")
