"""The organisation list's search and filters (name or id, banned), and what one organisation's
page and API answer read: members with their month's spend, keys, usage by model. Shared by the
console and the API."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import String, cast, func, or_, select

from controlplane.extensions import db
from controlplane.models import Account, AccountKind, ApiKey, Ban, KeyStatus, Membership, UsageRollup, utcnow
from controlplane.queries.pagination import row_id
from controlplane.services import bans

FILTERS = ("q", "banned")


def search(args):
    query = select(Account).where(Account.kind == AccountKind.ORGANISATION.value).order_by(Account.id)
    q = (args.get("q") or "").strip()
    if q:
        query = query.where(or_(func.lower(Account.name).contains(q.lower()), Account.id == (row_id(q) or -1)))
    if args.get("banned") in ("yes", "true", "1"):
        banned = bans.active_query().with_only_columns(Ban.subject).where(Ban.kind == "org")
        query = query.where(cast(Account.id, String).in_(banned))
    return query


def member_counts(account_ids: list[int]) -> dict[int, int]:
    if not account_ids:
        return {}
    return dict(db.session.execute(select(Membership.account_id, func.count()).where(Membership.account_id.in_(account_ids))
                                   .group_by(Membership.account_id)).all())


def banned_ids(account_ids: list[int]) -> set[int]:
    if not account_ids:
        return set()
    return {int(s) for s in db.session.scalars(bans.active_query().with_only_columns(Ban.subject).where(
        Ban.kind == "org", Ban.subject.in_([str(a) for a in account_ids])))}


def members(account_id: int) -> list[Membership]:
    return list(db.session.scalars(select(Membership).where(Membership.account_id == account_id).order_by(Membership.id)))


def keys(account_id: int) -> list[ApiKey]:
    return list(db.session.scalars(select(ApiKey).where(ApiKey.account_id == account_id, ApiKey.status != KeyStatus.DELETED.value)
                                   .order_by(ApiKey.id)))


def usage_by_model(account_id: int, days: int = 30) -> list:
    """(model, requests, errors, input tokens, output tokens, cost) over the last `days`, from the rollups."""
    since = (utcnow() - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    R = UsageRollup
    return list(db.session.execute(
        select(R.model, func.sum(R.requests), func.sum(R.errors),
               func.sum(R.input_tokens + R.cache_read_tokens + R.cache_write_tokens), func.sum(R.output_tokens + R.reasoning_tokens),
               func.sum(R.cost))
        .where(R.account_id == account_id, R.bucket >= since).group_by(R.model).order_by(func.sum(R.cost).desc())))
