"""Admin API: channels, their keys, their model lists and state history."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from controlplane.api import READERS, WRITERS, actor, payload, route
from controlplane.api.schema import ANY, INT, PAGE, STR, arr, described, obj
from controlplane.models import ChannelEvent, ChannelStatus
from controlplane.queries.channels import filtered
from controlplane.queries.pagination import page_number, paginate, per_page
from controlplane.services import ServiceError, channel_keys, channel_ops, channels as channel_service

FIELDS = dict(name=STR, type=STR, base_url=described(STR, "With its scheme, e.g. https://api.openai.com/v1"), models=arr(STR),
              model_map=described({"type": "object", "additionalProperties": STR}, "public name → upstream name"), groups=arr(STR),
              priority=INT, weight=INT, tag=STR, cost_bp=described(INT, "Upstream cost in basis points of list price (6000 = 60%)"),
              config=ANY)
EDITABLE = tuple(FIELDS)


def _status(data: dict) -> ChannelStatus:
    wanted = data.get("status")
    if wanted not in (ChannelStatus.ENABLED.value, ChannelStatus.DISABLED.value):
        raise ServiceError("status is enabled or disabled.", "status")
    return ChannelStatus(wanted)


@route("/v1/channels", "GET", summary="List channels (filters: type, status, tag, model, group, q)", tag="channels",
       query=dict(type=STR, status=STR, tag=STR, model=STR, group=STR, q=STR, **PAGE))
def list_channels():
    page = paginate(filtered(request.args), page_number(request.args), per_page(request.args))
    return jsonify(data=[channel_service.describe(c) for c in page.items], **page.meta())


@route("/v1/channels", "POST", summary="Create a channel with its keys", tag="channels", roles=WRITERS, status=201,
       body=obj(("name", "type", "base_url", "keys"), keys=arr(STR), **FIELDS))
def create_channel():
    data = payload()
    fields = {k: data[k] for k in EDITABLE if k in data}
    for name in ("name", "type", "base_url"):
        fields.setdefault(name, "")  # the service explains what is missing
    fields.setdefault("models", [])
    keys = data.get("keys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ServiceError("keys is a list of strings.", "keys")
    channel = channel_service.add_channel(actor(), keys=keys, **fields)
    return jsonify(channel_service.describe(channel)), 201


@route("/v1/channels/<int:channel_id>", "GET", summary="One channel (keys masked)", tag="channels")
def get_channel(channel_id: int):
    return jsonify(channel_service.describe(channel_service.channel_by_id(channel_id)))


@route("/v1/channels/<int:channel_id>", "PATCH", summary="Change any of a channel's fields", tag="channels", roles=WRITERS, body=obj(**FIELDS))
def update_channel(channel_id: int):
    channel = channel_service.channel_by_id(channel_id)
    data = payload()
    changed = channel_service.update_channel(actor(), channel, **{k: data[k] for k in EDITABLE if k in data})
    return jsonify(channel_service.describe(changed))


@route("/v1/channels/<int:channel_id>", "DELETE", summary="Delete a channel and its keys", tag="channels", roles=WRITERS, status=204)
def delete_channel(channel_id: int):
    channel_service.delete_channel(actor(), channel_service.channel_by_id(channel_id))
    return "", 204


@route("/v1/channels/<int:channel_id>/status", "POST", summary="Enable or disable a channel", tag="channels", roles=WRITERS,
       body=obj(("status",), status=STR, reason=STR))
def channel_status(channel_id: int):
    data = payload()
    channel = channel_service.set_status(actor(), channel_service.channel_by_id(channel_id), _status(data), data.get("reason"))
    return jsonify(channel_service.describe(channel))


@route("/v1/channels/bulk-status", "POST", summary="Enable or disable every channel with a tag", tag="channels", roles=WRITERS,
       body=obj(("tag", "status"), tag=STR, status=STR, reason=STR))
def bulk_status():
    data = payload()
    changed = channel_ops.set_status_by_tag(actor(), data.get("tag"), _status(data), data.get("reason"))
    return jsonify(changed=[c.id for c in changed])


@route("/v1/channels/<int:channel_id>/keys", "POST", summary="Add upstream keys", tag="channels", roles=WRITERS, status=201,
       body=obj(("keys",), keys=arr(STR)))
def add_keys(channel_id: int):
    channel = channel_service.channel_by_id(channel_id)
    keys = payload().get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ServiceError("keys is a list of strings.", "keys")
    added = channel_service.add_keys(actor(), channel, keys)
    return jsonify(added=[{"id": k.id, "key": k.masked} for k in added]), 201


@route("/v1/channels/<int:channel_id>/keys/<int:key_id>", "PATCH", summary="Enable or disable one key", tag="channels", roles=WRITERS,
       body=obj(("status",), status=STR, reason=STR))
def key_status(channel_id: int, key_id: int):
    data = payload()
    key = channel_keys.set_key_status(actor(), channel_keys.key_of(channel_id, key_id), _status(data), data.get("reason"))
    return jsonify(id=key.id, key=key.masked, status=key.status, reason=key.status_reason)


@route("/v1/channels/<int:channel_id>/keys/<int:key_id>", "DELETE", summary="Delete one key", tag="channels", roles=WRITERS, status=204)
def delete_key(channel_id: int, key_id: int):
    channel_keys.delete_key(actor(), channel_keys.key_of(channel_id, key_id))
    return "", 204


@route("/v1/channels/<int:channel_id>/models/fetch", "POST", summary="Ask the upstream which models it serves", tag="channels", roles=WRITERS,
       errors={502: "The upstream did not answer, refused, or sent a list that could not be read"})
def fetch_models(channel_id: int):
    return jsonify(models=channel_ops.fetch_models(channel_service.channel_by_id(channel_id)))


@route("/v1/channels/<int:channel_id>/models", "PUT", summary="Replace the models a channel serves", tag="channels", roles=WRITERS,
       body=obj(("models",), models=arr(STR)))
def set_models(channel_id: int):
    models = payload().get("models")
    if not isinstance(models, list):
        raise ServiceError("models is a list of strings.", "models")
    channel = channel_ops.set_models(actor(), channel_service.channel_by_id(channel_id), [str(m) for m in models])
    return jsonify(channel_service.describe(channel))


@route("/v1/channels/<int:channel_id>/events", "GET", summary="State history of a channel and its keys", tag="channels", roles=READERS,
       query=PAGE)
def channel_events(channel_id: int):
    channel_service.channel_by_id(channel_id)
    page = paginate(select(ChannelEvent).where(ChannelEvent.channel_id == channel_id).order_by(ChannelEvent.id.desc()),
                    page_number(request.args), per_page(request.args))
    return jsonify(data=[{"id": e.id, "key_id": e.channel_key_id, "from": e.from_status, "to": e.to_status, "reason": e.reason,
                          "actor": e.actor, "at": e.created_at.isoformat()} for e in page.items], **page.meta())

