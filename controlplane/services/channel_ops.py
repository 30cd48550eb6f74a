"""Channel operations beyond editing one channel: bulk state changes by tag, fetching the model
list from the upstream, and adopting models from it."""
from __future__ import annotations

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Channel, ChannelEvent, ChannelStatus, utcnow
from controlplane.runtime import runtime
from controlplane.services.base import Actor, ServiceError, audit, commit
from controlplane.services.channels import describe
from relay.channel_config import load_config
from relay.adapters import adapter_for
from relay.adapters.base import Operation
from relay.settings import Timeouts
from relay.snapshot import ChannelKeyView, ChannelView
from relay.upstream import UpstreamCallFailed, UpstreamClient

FETCH_TIMEOUT = 15.0  # seconds; an operator is waiting on the page
FETCH_LIMIT = 8 * 1024 * 1024  # the longest model lists (aggregators) are around a megabyte


def set_status_by_tag(actor: Actor, tag: str, status: ChannelStatus, reason: str | None = None) -> list[Channel]:
    """Enable or disable every channel carrying `tag` in one commit (and one snapshot publish)."""
    tag = (tag or "").strip()
    if not tag:
        raise ServiceError("Choose a tag.", "tag")
    if status not in (ChannelStatus.ENABLED, ChannelStatus.DISABLED):
        raise ServiceError("Channels can be enabled or disabled.", "status")
    channels = list(db.session.scalars(select(Channel).where(Channel.tag == tag).order_by(Channel.id)))
    if not channels:
        raise ServiceError(f"No channel has the tag {tag}.", "tag")
    reason = (reason or "").strip() or None
    changed = []
    for channel in channels:
        if channel.status == str(status):
            continue
        db.session.add(ChannelEvent(channel_id=channel.id, from_status=channel.status, to_status=str(status), reason=reason, actor=actor.name))
        channel.status, channel.status_reason, channel.status_since = str(status), reason, utcnow()
        changed.append(channel)
    audit(actor, "channel.bulk_status", "tag", tag, after={"status": str(status), "reason": reason, "channels": [c.id for c in changed]})
    commit()
    return changed


def _views(channel: Channel) -> tuple[ChannelView, ChannelKeyView]:
    usable = [k for k in channel.keys if k.status == ChannelStatus.ENABLED.value] or list(channel.keys)
    if not usable:
        raise ServiceError("The channel has no key to ask the upstream with.", "keys")
    key = usable[0]
    secret = runtime().cipher.decrypt(key.secret_encrypted)
    view = ChannelView(id=channel.id, name=channel.name, type=channel.type, base_url=channel.base_url, models=tuple(channel.models or ()),
                       keys=(), model_map=dict(channel.model_map or {}), config=load_config(channel.type, channel.config))
    return view, ChannelKeyView(id=key.id, secret=secret, status=key.status)


def fetch_models(channel: Channel) -> list[str]:
    """Ask the upstream which models it serves, with the channel's first enabled key."""
    adapter = adapter_for(channel.type)
    if Operation.MODELS not in adapter.info.capabilities:
        raise ServiceError(f"A {adapter.info.label} channel cannot list its models.", "models")
    view, key = _views(channel)
    request = adapter.models_request(view, key)
    # Through the egress guard: the address is checked as the connection is made, redirects are
    # answers (never followed), and the body read stops at FETCH_LIMIT.
    client = UpstreamClient(pool_size=1, egress=runtime().egress(), max_response_bytes=FETCH_LIMIT)
    try:
        response = client.send(request, Timeouts(connect=FETCH_TIMEOUT, first_byte=FETCH_TIMEOUT, idle=FETCH_TIMEOUT, total=FETCH_TIMEOUT))
        body = response.read_all()
    except UpstreamCallFailed as failed:
        raise ServiceError(f"The upstream did not answer ({failed.error.message}).", "models", status=502) from None
    if response.status >= 300:
        failure = adapter.classify_error(response.status, body, response.headers)
        raise ServiceError(f"The upstream answered {response.status}: {failure.message}", "models", status=502)
    try:
        return adapter.models_response(body)
    except Exception:
        raise ServiceError("The upstream's model list could not be read.", "models", status=502) from None


def set_models(actor: Actor, channel: Channel, models: list[str]) -> Channel:
    """Replace the channel's served models (e.g. with a selection from the upstream's list)."""
    cleaned = list(dict.fromkeys(m.strip() for m in models if m and m.strip()))
    if not cleaned and not channel.model_map:
        raise ServiceError("Choose at least one model.", "models")
    if any(len(m) > 200 for m in cleaned):
        raise ServiceError("A model name is at most 200 characters.", "models")
    before = describe(channel)
    channel.models = cleaned
    audit(actor, "channel.models", "channel", channel.id, before={"models": before["models"]}, after={"models": cleaned})
    commit()
    return channel
