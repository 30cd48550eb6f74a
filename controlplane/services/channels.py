"""Upstream channels and their keys. Secrets are encrypted before they reach SQL."""
from __future__ import annotations

import logging

from sqlalchemy import select

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import Channel, ChannelEvent, ChannelKey, ChannelStatus, utcnow
from controlplane.runtime import runtime
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit
from relay.adapters import CHANNEL_TYPES
from relay.channel_config import ConfigError, parse_config

log = logging.getLogger(__name__)


def describe(channel: Channel) -> dict:
    return {
        "id": channel.id,
        "name": channel.name,
        "type": channel.type,
        "base_url": channel.base_url,
        "models": list(channel.models or []),
        "model_map": dict(channel.model_map or {}),
        "groups": list(channel.groups or []),
        "priority": channel.priority,
        "weight": channel.weight,
        "tag": channel.tag,
        "cost_bp": channel.cost_bp,
        "config": dict(channel.config or {}),
        "status": channel.status,
        "status_reason": channel.status_reason,
        "keys": [{"id": k.id, "key": k.masked, "status": k.status, "reason": k.status_reason} for k in channel.keys],
    }


def channel_by_id(channel_id: int) -> Channel:
    channel = db.session.get(Channel, channel_id)
    if channel is None:
        raise NotFound(f"channel {channel_id}")
    return channel


def _clean_list(values) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in (values or ()) if v and v.strip()))


def _key_row(secret: str) -> ChannelKey:
    secret = secret.strip()
    if not secret:
        raise ServiceError("An upstream key cannot be empty.", "keys")
    return ChannelKey(secret_encrypted=runtime().cipher.encrypt(secret), last4=secret[-4:], status=ChannelStatus.ENABLED.value)


def validate_extras(changes: dict, channel_type: str) -> dict:
    """The optional fields: tag, upstream cost share, type-specific settings (checked against the
    channel's type: an unknown key or a value of the wrong type is refused, naming the key)."""
    out = {}
    if "tag" in changes:
        tag = (changes["tag"] or "").strip() or None
        if tag is not None and len(tag) > 64:
            raise ServiceError("A tag is at most 64 characters.", "tag")
        out["tag"] = tag
    if "cost_bp" in changes:
        cost = changes["cost_bp"]
        out["cost_bp"] = None if cost in (None, "") else validation.non_negative_int(cost, "cost_bp")
    if "config" in changes:
        config = changes["config"] if changes["config"] is not None else {}
        try:
            parse_config(channel_type, config)
        except ConfigError as error:
            raise ServiceError(error.message, "config") from None
        out["config"] = dict(config)  # stored as given: what the operator wrote is what they see
    return out


def validate_fields(*, name: str, type: str, base_url: str, models, model_map: dict, groups, priority, weight, lookup: bool = True) -> dict:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError("Give the channel a name of 1–100 characters.", "name")
    if type not in CHANNEL_TYPES:
        raise ServiceError(f"Choose a channel type: {', '.join(CHANNEL_TYPES)}.", "type")
    models = _clean_list(models)
    model_map = {k.strip(): v.strip() for k, v in (model_map or {}).items() if k.strip() and v.strip()}
    if not models and not model_map:
        raise ServiceError("List at least one model the channel serves.", "models")
    return dict(
        name=name,
        type=type,
        base_url=validation.upstream_url(base_url, lookup=lookup),
        models=models,
        model_map=model_map,
        groups=_clean_list(groups),
        priority=validation.integer(priority, "priority"),
        weight=validation.non_negative_int(weight, "weight"),
    )


def add_channel(actor: Actor, *, name: str, type: str, base_url: str, keys: list[str], models: list[str], model_map: dict | None = None,
                groups: list[str] | None = None, priority=0, weight=1, tag: str | None = None, config: dict | None = None,
                cost_bp: int | None = None, lookup: bool = True) -> Channel:
    """`lookup=False` saves a URL without asking DNS (seeded demo data); the relay checks every
    address it connects to regardless."""
    fields = validate_fields(name=name, type=type, base_url=base_url, models=models, model_map=model_map or {}, groups=groups,
                             priority=priority, weight=weight, lookup=lookup)
    extras = validate_extras({"tag": tag, "config": config, "cost_bp": cost_bp}, fields["type"])
    secrets = [k for k in (keys or []) if k.strip()]
    if not secrets:
        raise ServiceError("Add at least one upstream key.", "keys")
    channel = Channel(**fields, **extras, status=ChannelStatus.ENABLED.value)
    channel.keys = [_key_row(s) for s in secrets]
    db.session.add(channel)
    db.session.flush()
    audit(actor, "channel.create", "channel", channel.id, after=describe(channel))
    commit()
    return channel


def update_channel(actor: Actor, channel: Channel, **changes) -> Channel:
    before = describe(channel)
    merged = {f: changes.get(f, getattr(channel, f)) for f in ("name", "type", "base_url", "models", "model_map", "groups", "priority", "weight")}
    # An unchanged URL is not looked up again: editing a weight must not depend on DNS.
    fields = validate_fields(**merged, lookup=merged["base_url"] != channel.base_url)
    # A change of type re-checks the stored settings too: the old type's keys may not fit the new one.
    if fields["type"] != channel.type and "config" not in changes:
        changes = {**changes, "config": channel.config}
    fields.update(validate_extras(changes, fields["type"]))
    for field, value in fields.items():
        setattr(channel, field, value)
    audit(actor, "channel.update", "channel", channel.id, before=before, after=describe(channel))
    commit()
    return channel


def add_keys(actor: Actor, channel: Channel, secrets: list[str]) -> list[ChannelKey]:
    rows = [_key_row(s) for s in secrets if s.strip()]
    if not rows:
        raise ServiceError("Paste at least one key.", "keys")
    channel.keys.extend(rows)
    db.session.flush()
    audit(actor, "channel.keys_add", "channel", channel.id, after={"added": [r.masked for r in rows]})
    commit()
    return rows


def set_status(actor: Actor, channel: Channel, status: ChannelStatus, reason: str | None = None) -> Channel:
    if channel.status == str(status):
        return channel
    before = channel.status
    channel.status, channel.status_reason, channel.status_since = str(status), reason, utcnow()
    db.session.add(ChannelEvent(channel_id=channel.id, from_status=before, to_status=str(status), reason=reason, actor=actor.name))
    audit(actor, "channel.status", "channel", channel.id, before={"status": before}, after={"status": str(status), "reason": reason})
    commit()
    if status == ChannelStatus.ENABLED:
        forget_passive_health(channel_id=channel.id)
    return channel


def forget_passive_health(channel_id: int, key_id: int | None = None) -> None:
    """An operator's enable starts afresh: drop the relays' ejection and dead-key marks (best effort)
    of the channel, or of its key `key_id`."""
    from relay.health import Health

    try:
        health = Health(runtime().redis)
        if key_id is None:
            health.forget_channel(channel_id)
        else:
            health.forget_key(channel_id, key_id)
    except Exception:  # the marks lapse on their own within minutes; never fail the operator's action
        log.warning("could not clear passive health marks (channel %s, key %s)", channel_id, key_id, exc_info=True)


def delete_channel(actor: Actor, channel: Channel) -> None:
    audit(actor, "channel.delete", "channel", channel.id, before=describe(channel))
    db.session.delete(channel)
    commit()


def all_channels() -> list[Channel]:
    return list(db.session.scalars(select(Channel).order_by(Channel.priority.desc(), Channel.id)))
