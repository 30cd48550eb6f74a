"""The channel list's filters (type, state, tag, model, group, name), shared by console and API."""
from __future__ import annotations

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Channel, ChannelStatus

STATES = [s.value for s in ChannelStatus]
FILTERS = ("q", "type", "status", "tag", "model", "group")


def _matching_ids(model: str, group: str) -> list[int]:
    """Channels serving `model` / open to `group`. The lists are JSON, so they are matched here on
    the light columns rather than with each back end's JSON operators."""
    ids = []
    for cid, models, model_map, groups in db.session.execute(select(Channel.id, Channel.models, Channel.model_map, Channel.groups)):
        if model and model not in (models or []) and model not in (model_map or {}):
            continue
        if group and (groups or []) and group not in groups:
            continue
        ids.append(cid)
    return ids


def filtered(args):
    query = select(Channel).order_by(Channel.priority.desc(), Channel.id)
    if args.get("q"):
        query = query.where(Channel.name.contains(args["q"].strip()))
    if args.get("type"):
        query = query.where(Channel.type == args["type"])
    if args.get("status") in STATES:
        query = query.where(Channel.status == args["status"])
    if args.get("tag"):
        query = query.where(Channel.tag == args["tag"])
    if args.get("model") or args.get("group"):
        query = query.where(Channel.id.in_(_matching_ids((args.get("model") or "").strip(), (args.get("group") or "").strip())))
    return query
