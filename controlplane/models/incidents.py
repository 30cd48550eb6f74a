"""Incidents: notes operators write for the public status page — what is affected, since when,
until when — kept after they end so the page can show the last 30 days."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.extensions import db
from controlplane.models.types import JsonType, StrEnum, UTCDateTime, utcnow

TITLE_MAX = 200
BODY_MAX = 2_000


class Impact(StrEnum):
    DEGRADED = "degraded"  # slower or failing now and then
    OUTAGE = "outage"  # not served


class Incident(db.Model):
    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_started_at", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    body: Mapped[str] = mapped_column(Text, default="")  # ≤ BODY_MAX characters, held by the service
    impact: Mapped[str] = mapped_column(String(16), default=Impact.DEGRADED.value)
    models: Mapped[list] = mapped_column(JsonType, default=list)  # public model names; [] = every model
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def open_at(self, moment: datetime) -> bool:
        return self.started_at <= moment and (self.ended_at is None or self.ended_at > moment)

    def affects(self, model: str) -> bool:
        return not self.models or model in self.models
