"""Builds the relay's routing snapshot from SQL and publishes it through Redis: channels and their
keys, groups, prices, bans of addresses — what does not grow with customers. API keys and their
owners are per-key records instead (controlplane/key_records.py)."""
from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import or_, select

from controlplane.extensions import db
from controlplane.models import Ban, BanKind, Channel, Group, ModelPrice, ModelRoute, utcnow
from controlplane.runtime import runtime
from relay import config_store
from relay.channel_config import load_config
from relay.pricing import Price, image_table
from relay.snapshot import (
    BanView,
    ChannelKeyView,
    ChannelView,
    GroupView,
    Limits,
    ModelRoute as ModelRouteView,
    Snapshot,
    group_prices,
    index_bans,
)

log = logging.getLogger(__name__)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def price_view(row: ModelPrice) -> Price:
    return Price(
        model=row.model,
        input=row.input,
        output=row.output,
        cache_read=row.cache_read,
        cache_write=row.cache_write,
        reasoning=row.reasoning,
        per_request=row.per_request,
        effective_from=row.effective_from.timestamp(),
        max_output_tokens=row.max_output_tokens,
        per_image=row.per_image,
        image_prices=image_table(row.image_prices),
        per_1m_chars=row.per_1m_chars,
        per_minute_audio=row.per_minute_audio,
    )


def current_and_upcoming(prices: list[Price], now: float) -> list[Price]:
    """Per model, the price in force now and every scheduled one; superseded history is dropped."""
    kept = []
    for history in group_prices(prices).values():
        start = 0
        for i, p in enumerate(history):
            if p.effective_from <= now:
                start = i
        kept.extend(history[start:])
    return kept


def build(version: int) -> Snapshot:
    """Read everything the relay needs. Channel secrets stay encrypted; the relay decrypts them."""
    now = utcnow()
    groups = {g.name: g for g in db.session.scalars(select(Group))}
    channels = tuple(
        ChannelView(
            id=c.id,
            name=c.name,
            type=c.type,
            base_url=c.base_url,
            models=tuple(c.models or ()),
            model_map=dict(c.model_map or {}),
            groups=tuple(c.groups or ()),
            priority=c.priority,
            weight=c.weight,
            status=c.status,
            config=load_config(c.type, c.config),
            limits=Limits(c.rpm, c.tpm, c.concurrency),
            key_limits=Limits(c.key_rpm, c.key_tpm, c.key_concurrency),
            tag=c.tag,
            cost_bp=c.cost_bp,
            keys=tuple(
                ChannelKeyView(id=k.id, secret=k.secret_encrypted, status=k.status, since=_epoch(k.status_since) or 0.0)
                for k in c.keys
            ),
        )
        for c in db.session.scalars(select(Channel).order_by(Channel.id))
    )

    ban_rows = db.session.scalars(
        select(Ban).where(Ban.kind == BanKind.IP.value, Ban.lifted_at.is_(None), or_(Ban.expires_at.is_(None), Ban.expires_at > now))
    )
    # One ban per subject reaches the relay: the one that lasts longest.
    longest: dict[tuple[str, str], BanView] = {}
    for b in ban_rows:
        view = BanView(kind=b.kind, subject=b.subject, expires_at=_epoch(b.expires_at))
        seen = longest.get((b.kind, b.subject))
        if seen is None or (seen.expires_at is not None and (view.expires_at is None or view.expires_at > seen.expires_at)):
            longest[(b.kind, b.subject)] = view

    prices = current_and_upcoming([price_view(p) for p in db.session.scalars(select(ModelPrice))], now.timestamp())
    return Snapshot(
        version=version,
        built_at=time.time(),
        groups={
            name: GroupView(
                name=name,
                multiplier_bp=g.multiplier_bp,
                model_patterns=tuple(g.model_patterns or ()),
                rpm=g.rpm,
                tpm=g.tpm,
                concurrency=g.concurrency,
                queue_seconds=g.queue_seconds,
                priority=g.priority,
            )
            for name, g in groups.items()
        },
        prices=group_prices(prices),
        channels=channels,
        bans=index_bans(longest.values()),
        model_routes={r.model: ModelRouteView(r.model, r.strategy, tuple(r.targets or ())) for r in db.session.scalars(select(ModelRoute))},
    )


def publish() -> int:
    """Build from the committed state and publish; returns the version. Relays skip a snapshot
    whose content did not change."""
    rt = runtime()
    version = config_store.next_version(rt.redis)
    snap = build(version)
    config_store.store(rt.redis, version, snap.to_payload(encrypt=lambda token: token))
    return version
