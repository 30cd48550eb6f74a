"""One upstream key of a channel: its state (with reason and history) and its removal.

Secrets never come back out of here; callers see the masked form (last four characters).
"""
from __future__ import annotations

from controlplane.extensions import db
from controlplane.models import ChannelEvent, ChannelKey, ChannelStatus, utcnow
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit

OPERATOR_STATES = (ChannelStatus.ENABLED, ChannelStatus.DISABLED)


def key_of(channel_id: int, key_id: int) -> ChannelKey:
    key = db.session.get(ChannelKey, key_id)
    if key is None or key.channel_id != channel_id:
        raise NotFound(f"key {key_id} of channel {channel_id}")
    return key


def _describe(key: ChannelKey) -> dict:
    return {"id": key.id, "key": key.masked, "status": key.status, "reason": key.status_reason}


def set_key_status(actor: Actor, key: ChannelKey, status: ChannelStatus, reason: str | None = None) -> ChannelKey:
    """An operator enables or disables a key; the transition is kept in the channel's history."""
    if status not in OPERATOR_STATES:
        raise ServiceError("An operator can enable or disable a key.", "status")
    if key.status == str(status):
        return key
    reason = (reason or "").strip() or None
    before = _describe(key)
    db.session.add(ChannelEvent(channel_id=key.channel_id, channel_key_id=key.id, from_status=key.status,
                                to_status=str(status), reason=reason, actor=actor.name))
    key.status, key.status_reason, key.status_since = str(status), reason, utcnow()
    audit(actor, "channel.key_status", "channel", key.channel_id, before=before, after=_describe(key))
    commit()
    if status == ChannelStatus.ENABLED:
        from controlplane.services.channels import forget_passive_health

        forget_passive_health(key.channel_id, key.id)
    return key


def delete_key(actor: Actor, key: ChannelKey) -> None:
    channel = key.channel
    if len(channel.keys) <= 1:
        raise ServiceError("A channel needs at least one key: add another before deleting this one, or delete the channel.", "keys")
    audit(actor, "channel.key_delete", "channel", key.channel_id, before=_describe(key))
    channel.keys.remove(key)
    db.session.delete(key)
    commit()
