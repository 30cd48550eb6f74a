"""Upstream channels, their keys (encrypted at rest), and the history of their state changes."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.extensions import db
from controlplane.models.types import BigId, JsonType, StrEnum, UTCDateTime, utcnow


class ChannelStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # by an operator; never changed automatically
    AUTO_DISABLED = "auto_disabled"


class Channel(db.Model):
    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(500))
    models: Mapped[list] = mapped_column(JsonType, default=list)
    model_map: Mapped[dict] = mapped_column(JsonType, default=dict)  # public name → upstream name
    groups: Mapped[list] = mapped_column(JsonType, default=list)  # [] = every group
    priority: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    tag: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    config: Mapped[dict] = mapped_column(JsonType, default=dict)
    # What the upstream charges us, as basis points of the model's list price before group
    # multipliers (6,000 = we pay 60% of list). None: not configured, so no margin is shown.
    cost_bp: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=ChannelStatus.ENABLED.value)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # >>> upstream capacity (None: unlimited) — of the whole channel, and of each key
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Active health (workers/health.py): consecutive probe runs that failed / passed, the last one.
    probe_failures: Mapped[int] = mapped_column(Integer, default=0)
    probe_passes: Mapped[int] = mapped_column(Integer, default=0)
    probed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    probe_latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    probe_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # <<<

    keys: Mapped[list["ChannelKey"]] = relationship(
        back_populates="channel", cascade="all, delete-orphan", order_by="ChannelKey.id"
    )


class ChannelKey(db.Model):
    __tablename__ = "channel_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    last4: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(16), default=ChannelStatus.ENABLED.value)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # >>> active health of this key (consecutive probe failures / passes, the last probe)
    probe_failures: Mapped[int] = mapped_column(Integer, default=0)
    probe_passes: Mapped[int] = mapped_column(Integer, default=0)
    probed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    probe_latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    probe_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # <<<

    channel: Mapped[Channel] = relationship(back_populates="keys")

    @property
    def masked(self) -> str:
        return "••••" + self.last4


class ChannelEvent(db.Model):
    """One state transition of a channel or one of its keys: who or what, why, when."""

    __tablename__ = "channel_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    channel_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(254))  # an operator's email, "health", "relay"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # the notification outbox — set once operators were told (automatic transitions only)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
