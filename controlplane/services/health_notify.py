"""Telling operators about automatic channel state changes: the channel events nobody was told about
yet are an outbox; one email digest to the alert addresses and one signed webhook per event.

Events are marked notified only when every configured delivery worked (or after an hour of trying),
so a crash or an SMTP outage delays a notice but never loses it; a webhook may then arrive twice, and
carries the event id so receivers can tell.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Channel, ChannelEvent, ChannelKey, utcnow
from controlplane.notify import send_email, send_webhook
from controlplane.runtime import runtime
from controlplane.services.base import commit
from controlplane.services.channel_health import SYSTEM_ACTORS

GIVE_UP_AFTER = timedelta(hours=1)


def _describe(event: ChannelEvent, names: dict[int, str], last4: dict[int, str]) -> dict:
    return {
        "id": event.id,
        "channel_id": event.channel_id,
        "channel": names.get(event.channel_id, f"#{event.channel_id}"),
        "key_id": event.channel_key_id,
        "key": "••••" + last4[event.channel_key_id] if event.channel_key_id in last4 else None,
        "from": event.from_status,
        "to": event.to_status,
        "reason": event.reason,
        "actor": event.actor,
        "at": event.created_at.isoformat(),
    }


def _line(d: dict) -> str:
    subject = f"{d['channel']} key {d['key']}" if d["key"] else d["channel"]
    return f"{d['at']}  {subject}: {d['from']} → {d['to']} ({d['actor']}) — {d['reason'] or 'no reason given'}"


def pending(limit: int = 100) -> list[ChannelEvent]:
    return list(db.session.scalars(
        select(ChannelEvent).where(ChannelEvent.notified_at.is_(None), ChannelEvent.actor.in_(SYSTEM_ACTORS))
        .order_by(ChannelEvent.id).limit(limit)
    ))


def notify_pending(settings) -> int:
    """Deliver the outbox; returns how many events were marked notified."""
    events = pending()
    if not events:
        return 0
    names = dict(db.session.execute(select(Channel.id, Channel.name).where(Channel.id.in_({e.channel_id for e in events}))).all())
    key_ids = {e.channel_key_id for e in events if e.channel_key_id}
    last4 = dict(db.session.execute(select(ChannelKey.id, ChannelKey.last4).where(ChannelKey.id.in_(key_ids))).all()) if key_ids else {}
    described = [_describe(e, names, last4) for e in events]
    delivered = True
    if settings.alert_emails and settings.smtp.configured:
        body = "Switchboard changed the state of these channels:\n\n" + "\n".join(_line(d) for d in described) + "\n"
        subject = f"Switchboard: {len(described)} channel state change(s)"
        for address in settings.alert_emails:
            delivered &= send_email(settings.smtp, address, subject, body).ok
    if settings.alert_webhook_url:
        egress = runtime().egress()  # the operator's own URL: the ranges they opened apply
        for d in described:
            delivered &= send_webhook(settings.alert_webhook_url, "channel.status_changed", d, egress=egress, secret=settings.webhook_secret).ok
    now = utcnow()
    marked = 0
    for event in events:
        if delivered or now - event.created_at > GIVE_UP_AFTER:
            event.notified_at = now
            marked += 1
    commit(publish=False)
    return marked
