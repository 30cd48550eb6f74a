"""Builds the relay's config snapshot from SQL and publishes it through Redis (design.md §7)."""
from __future__ import annotations

import ipaddress
import logging
import time
from datetime import datetime

from sqlalchemy import or_, select

from controlplane.extensions import db
from controlplane.models import (Account, AccountKind, ApiKey, Ban, Channel, Group, KeyStatus, Membership, ModelPrice, User,
                                 UserStatus, utcnow)
from controlplane.runtime import runtime
from relay import config_store
from relay.pricing import Price, image_table
from relay.snapshot import BanView, ChannelKeyView, ChannelView, GroupView, KeyView, Limits, Snapshot, group_prices, index_bans

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


def _organisation_members() -> dict[int, dict[int, Membership]]:
    """Organisation account id → user id → membership (issue 6: allowances, removed members)."""
    found: dict[int, dict[int, Membership]] = {
        account_id: {} for account_id in db.session.scalars(select(Account.id).where(Account.kind == AccountKind.ORGANISATION.value))
    }
    for m in db.session.scalars(select(Membership)):
        found.setdefault(m.account_id, {})[m.user_id] = m
    return found


def build(version: int) -> Snapshot:
    """Read everything the relay needs. Channel secrets stay encrypted; the relay decrypts them."""
    now = utcnow()
    groups = {g.name: g for g in db.session.scalars(select(Group))}
    default_group = next((g.name for g in groups.values() if g.is_default), "default")
    users = {u.id: u for u in db.session.scalars(select(User))}
    disabled = frozenset(uid for uid, u in users.items() if u.status != UserStatus.ACTIVE.value)
    group_by_id = {g.id: g.name for g in groups.values()}

    keys = {}
    members = _organisation_members()
    for k in db.session.scalars(select(ApiKey).where(ApiKey.status != KeyStatus.DELETED.value)):
        owner = users.get(k.user_id) if k.user_id is not None else None
        status, allowance = k.status, None
        if k.account_id in members:  # an organisation's key: its user must still be a member
            membership = members[k.account_id].get(k.user_id)
            status = status if membership is not None else KeyStatus.DISABLED.value
            allowance = membership.monthly_allowance if membership is not None else None
        keys[k.key_hash] = KeyView(
            id=k.id,
            account_id=k.account_id,
            user_id=k.user_id,
            group=group_by_id.get(owner.group_id, default_group) if owner else default_group,
            prefix=k.prefix,
            status=status,
            expires_at=_epoch(k.expires_at),
            models=frozenset(k.models or ()),
            ip_allow=tuple(ipaddress.ip_network(n, strict=False) for n in (k.ip_allow or ())),
            credit_limit=k.credit_limit,
            daily_budget=k.daily_budget,
            monthly_budget=k.monthly_budget,
            member_allowance=allowance,
            limits=Limits(k.rpm, k.tpm, k.concurrency),
        )

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
            config=dict(c.config or {}),
            limits=Limits(c.rpm, c.tpm, c.concurrency),
            key_limits=Limits(c.key_rpm, c.key_tpm, c.key_concurrency),
            keys=tuple(
                ChannelKeyView(id=k.id, secret=k.secret_encrypted, status=k.status, since=_epoch(k.status_since) or 0.0)
                for k in c.keys
            ),
        )
        for c in db.session.scalars(select(Channel).order_by(Channel.id))
    )

    ban_rows = db.session.scalars(
        select(Ban).where(Ban.lifted_at.is_(None), or_(Ban.expires_at.is_(None), Ban.expires_at > now))
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
        keys=keys,
        groups={
            name: GroupView(
                name=name,
                multiplier_bp=g.multiplier_bp,
                model_patterns=tuple(g.model_patterns or ()),
                rpm=g.rpm,
                tpm=g.tpm,
                concurrency=g.concurrency,
            )
            for name, g in groups.items()
        },
        prices=group_prices(prices),
        channels=channels,
        bans=index_bans(longest.values()),
        disabled_users=disabled,
        user_limits={uid: lim for uid, u in users.items() if (lim := Limits(u.rpm, u.tpm, u.concurrency)).any},
    )


def publish() -> int:
    """Build from the committed state and publish; returns the version. Call after every commit."""
    rt = runtime()
    version = config_store.next_version(rt.redis)
    snap = build(version)
    config_store.store(rt.redis, version, snap.to_payload(encrypt=lambda token: token))
    seed_live_money(snap)
    return version


def seed_live_money(snap: Snapshot) -> None:
    """Make sure Redis knows every account and key the relay may charge (after a Redis loss too)."""
    from controlplane.models import Account

    rt = runtime()
    account_ids = {k.account_id for k in snap.keys.values()}
    if not account_ids:
        return
    balances = dict(db.session.execute(select(Account.id, Account.balance).where(Account.id.in_(account_ids))).all())
    spent = dict(db.session.execute(select(ApiKey.id, ApiKey.spent).where(ApiKey.id.in_([k.id for k in snap.keys.values()]))).all())
    pipe = rt.redis.pipeline(transaction=False)
    from relay.quota import account_key, api_key_key

    for account_id, balance in balances.items():
        pipe.hsetnx(account_key(account_id), "bal", balance)
    for key_id, value in spent.items():
        pipe.hsetnx(api_key_key(key_id), "spent", value)
    pipe.execute()
    from controlplane.budgets import seed_windows

    seed_windows(snap)
