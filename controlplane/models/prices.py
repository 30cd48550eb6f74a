"""Model prices, effective-dated: integer µ$ per 1M tokens, per request, per image (by size and
quality), per 1M characters of speech input and per minute of transcribed audio."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.extensions import db
from controlplane.models.types import JsonType, Money, UTCDateTime, utcnow


class ModelPrice(db.Model):
    __tablename__ = "model_prices"
    __table_args__ = (UniqueConstraint("model", "effective_from", name="uq_model_prices_model_from"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    input: Mapped[int] = mapped_column(Money)
    output: Mapped[int] = mapped_column(Money)
    cache_read: Mapped[int | None] = mapped_column(Money, nullable=True)
    cache_write: Mapped[int | None] = mapped_column(Money, nullable=True)
    reasoning: Mapped[int | None] = mapped_column(Money, nullable=True)
    per_request: Mapped[int] = mapped_column(Money, default=0)
    max_output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    per_image: Mapped[int | None] = mapped_column(Money, nullable=True)
    image_prices: Mapped[dict | None] = mapped_column(JsonType, nullable=True)  # {"SIZE/QUALITY": µ$}
    per_1m_chars: Mapped[int | None] = mapped_column(Money, nullable=True)
    per_minute_audio: Mapped[int | None] = mapped_column(Money, nullable=True)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelRoute(db.Model):
    """How one public model name is routed: the selection strategy inside a priority tier, and, for
    an alias, the models it stands for (tried in order, as a caller's `models` list would be)."""

    __tablename__ = "model_routes"

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200), unique=True)
    strategy: Mapped[str] = mapped_column(String(16), default="priority")  # priority | latency | cost
    targets: Mapped[list] = mapped_column(JsonType, default=list)  # non-empty: an alias for these models, in order
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
