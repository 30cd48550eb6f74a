"""Low-balance alert settings, one row per account, and the state that makes an alert go out once
per crossing: `below` is set when the alert is sent and cleared when the balance is back above."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.extensions import db
from controlplane.models.types import Money, UTCDateTime, utcnow


class AlertSetting(db.Model):
    __tablename__ = "alert_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), unique=True)
    threshold: Mapped[int | None] = mapped_column(Money, nullable=True)  # µ$; None: no alert
    email: Mapped[bool] = mapped_column(Boolean, default=True)
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    below: Mapped[bool] = mapped_column(Boolean, default=False)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_result: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
