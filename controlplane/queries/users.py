"""The user list's search and filters (email or id, role, group, status, banned), shared by the
console and the API."""
from __future__ import annotations

from sqlalchemy import String, cast, or_, select

from controlplane.models import Ban, Group, Role, User
from controlplane.queries.pagination import row_id
from controlplane.services import bans

ROLES = [r.value for r in Role]
FILTERS = ("q", "role", "group", "status", "banned")


def search(args):
    query = select(User).order_by(User.id)
    q = (args.get("q") or "").strip().lower()
    if q:
        query = query.where(or_(User.email.contains(q), User.id == (row_id(q) or -1)))
    if args.get("role") in ROLES:
        query = query.where(User.role == args["role"])
    if args.get("group"):
        query = query.where(User.group_id.in_(select(Group.id).where(Group.name == args["group"])))
    if args.get("status") in ("active", "disabled", "closed"):
        query = query.where(User.status == args["status"])
    if args.get("banned") in ("yes", "true", "1"):
        banned = bans.active_query().with_only_columns(Ban.subject).where(Ban.kind == "user")
        query = query.where(cast(User.id, String).in_(banned))
    return query
