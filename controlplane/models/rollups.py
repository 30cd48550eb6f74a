"""Hourly usage rollups: what dashboards and usage pages read instead of raw request logs.

One row per (hour, account, key, model, channel). Latencies are kept as fixed-bucket histograms so
percentiles can be computed over any set of rows (rollups.py has the buckets and the arithmetic).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.extensions import db
from controlplane.models.types import BigId, JsonType, Money, UTCDateTime


class RollupCounts:
    """The totals every rollup keeps for its hour and dimensions."""

    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)  # answered with 400 or above, the caller's mistakes included
    failures: Mapped[int] = mapped_column(Integer, default=0)  # answered with 500 or above: ours or the upstream's (uptime)
    input_tokens: Mapped[int] = mapped_column(Money, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(Money, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Money, default=0)
    output_tokens: Mapped[int] = mapped_column(Money, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Money, default=0)
    cost: Mapped[int] = mapped_column(Money, default=0)  # µ$ charged
    upstream_cost: Mapped[int] = mapped_column(Money, default=0)  # µ$ paid upstream, when known
    latency_hist: Mapped[list] = mapped_column(JsonType, default=list)
    ttft_hist: Mapped[list] = mapped_column(JsonType, default=list)


class UsageRollup(RollupCounts, db.Model):
    __tablename__ = "usage_rollups"
    __table_args__ = (
        UniqueConstraint("bucket", "account_id", "api_key_id", "model", "channel_id", name="uq_usage_rollups_dims"),
        Index("ix_usage_rollups_account_bucket", "account_id", "bucket"),
        Index("ix_usage_rollups_bucket", "bucket"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime)  # start of the UTC hour
    # Dimensions use 0 / "" instead of NULL so the unique constraint holds on every back end.
    account_id: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[int] = mapped_column(Integer, default=0)
    api_key_id: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str] = mapped_column(String(200), default="")
    channel_id: Mapped[int] = mapped_column(Integer, default=0)


class ChannelRollup(RollupCounts, db.Model):
    """Hourly totals per (model, channel) for the operator dashboard.

    The same counts as `UsageRollup` without the account and key dimensions, so a 30-day dashboard
    reads hundreds of rows instead of one per customer key.
    """

    __tablename__ = "channel_rollups"
    __table_args__ = (
        UniqueConstraint("bucket", "model", "channel_id", name="uq_channel_rollups_dims"),
        Index("ix_channel_rollups_bucket", "bucket"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime)
    model: Mapped[str] = mapped_column(String(200), default="")
    channel_id: Mapped[int] = mapped_column(Integer, default=0)
