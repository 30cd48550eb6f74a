"""The audit log's filters (who, action prefix, target) and what each entry changed."""
from __future__ import annotations

from sqlalchemy import select

from controlplane.models import AuditEntry

FILTERS = ("actor", "action", "target_type", "target_id")


def filtered(args):
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if args.get("actor"):
        query = query.where(AuditEntry.actor.contains(args["actor"].strip()))
    if args.get("action"):
        query = query.where(AuditEntry.action.startswith(args["action"].strip()))
    if args.get("target_type"):
        query = query.where(AuditEntry.target_type == args["target_type"].strip())
    if args.get("target_id"):
        query = query.where(AuditEntry.target_id == args["target_id"].strip())
    return query


def changes(entry: AuditEntry) -> list[tuple[str, object, object]]:
    """(field, before, after) for what differs; a creation or deletion lists every field."""
    before, after = entry.before or {}, entry.after or {}
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [("value", before, after)]
    keys = list(dict.fromkeys([*before, *after]))
    return [(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]
