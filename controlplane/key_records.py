"""The control plane's side of the key records (relay/keys.py): built from SQL in bounded chunks,
written to Redis in one pipelined round trip per chunk, and announced on the change log the relays
follow (relay/key_cache.py).

Every query here binds at most `CHUNK` ids: nothing ever lists every key or account, so a write
costs the same at a thousand keys as at a million. Writing a record also gives Redis what it needs
to charge that key if it lost it (account balance, key spend, the period's spend windows), never
overwriting live figures.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select

from controlplane.extensions import db
from controlplane.models import (
    Account,
    AccountKind,
    ApiKey,
    Ban,
    Group,
    KeyStatus,
    Membership,
    User,
    UserStatus,
    utcnow,
)
from relay import keys as rk
from relay import redis_keys
from relay.quota import account_key, api_key_key
from relay.snapshot import Limits

CHUNK = 1000  # ids bound in one query, records written in one pipeline


@dataclass(frozen=True)
class KeyRecord:
    """One key's row of the records to write: its view, or None when it must leave Redis."""

    id: int
    hash: str
    account_id: int
    spent: int
    view: rk.KeyView | None
    balance: int  # the account's, in SQL: seeds Redis only where Redis has none


def chunks(ids: Iterable[int], size: int = CHUNK) -> Iterator[list[int]]:
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _ban_until(current: float | None, expires_at: datetime | None) -> float:
    """The longer of two bans; 0.0 stands for a ban with no end."""
    until = _epoch(expires_at) or 0.0
    if current is None:
        return until
    if current == 0.0 or until == 0.0:
        return 0.0
    return max(current, until)


def _combined(a: float | None, b: float | None) -> float | None:
    """Two bans' ends (None: no ban) as the one that lasts longer."""
    if a is None or b is None:
        return a if b is None else b
    return 0.0 if 0.0 in (a, b) else max(a, b)


def key_rows():
    """The select a chunk of records is built from: each key with its owner and its account, in one
    query (callers add the WHERE, ORDER and LIMIT)."""
    return (select(ApiKey.id, ApiKey.key_hash, ApiKey.account_id, ApiKey.user_id, ApiKey.prefix, ApiKey.status, ApiKey.expires_at,
                   ApiKey.models, ApiKey.ip_allow, ApiKey.credit_limit, ApiKey.daily_budget, ApiKey.monthly_budget, ApiKey.rpm,
                   ApiKey.tpm, ApiKey.concurrency, ApiKey.spent, Account.kind.label("account_kind"), Account.balance.label("balance"),
                   User.status.label("user_status"), User.group_id.label("user_group_id"), User.rpm.label("user_rpm"),
                   User.tpm.label("user_tpm"), User.concurrency.label("user_concurrency"))
            .join(Account, Account.id == ApiKey.account_id).outerjoin(User, User.id == ApiKey.user_id))


def build(rows) -> list[KeyRecord]:
    """Records for ≤ CHUNK rows of `key_rows()`: with the groups, the organisation memberships and
    the bans, read with queries bounded by the chunk (two, three with organisations)."""
    if not rows:
        return []
    user_ids = {r.user_id for r in rows if r.user_id is not None}
    groups: dict[int, str] = {}
    default = "default"
    for group_id, name, is_default in db.session.execute(select(Group.id, Group.name, Group.is_default)):
        groups[group_id] = name
        default = name if is_default else default
    organisations = {r.account_id for r in rows if r.account_kind == AccountKind.ORGANISATION.value}
    members = {}
    if organisations and user_ids:
        members = {(m.account_id, m.user_id): m.monthly_allowance for m in db.session.execute(
            select(Membership.account_id, Membership.user_id, Membership.monthly_allowance)
            .where(Membership.account_id.in_(organisations), Membership.user_id.in_(user_ids)))}
    user_bans: dict[int, float] = {}
    key_bans: dict[int, float] = {}
    org_bans: dict[int, float] = {}
    now = utcnow()
    subjects = [and_(Ban.kind == "key", Ban.subject.in_([str(r.id) for r in rows]))]
    if user_ids:
        subjects.append(and_(Ban.kind == "user", Ban.subject.in_([str(u) for u in user_ids])))
    if organisations:
        subjects.append(and_(Ban.kind == "org", Ban.subject.in_([str(a) for a in organisations])))
    for kind, subject, expires_at in db.session.execute(select(Ban.kind, Ban.subject, Ban.expires_at).where(
            Ban.lifted_at.is_(None), or_(Ban.expires_at.is_(None), Ban.expires_at > now), or_(*subjects))):
        found = {"user": user_bans, "org": org_bans}.get(kind, key_bans)
        found[int(subject)] = _ban_until(found.get(int(subject)), expires_at)

    records = []
    for r in rows:
        if r.status == KeyStatus.DELETED.value:
            records.append(KeyRecord(r.id, r.key_hash, r.account_id, r.spent or 0, None, r.balance))
            continue
        owner = r.user_id is not None and r.user_status is not None
        status, allowance = r.status, None
        if r.account_id in organisations:  # an organisation's key: its user must still be a member
            if (r.account_id, r.user_id) in members:
                allowance = members[(r.account_id, r.user_id)]
            else:
                status = KeyStatus.DISABLED.value
        view = rk.KeyView(
            id=r.id, account_id=r.account_id, user_id=r.user_id,
            group=groups.get(r.user_group_id, default) if owner else default,
            prefix=r.prefix, status=status, expires_at=_epoch(r.expires_at),
            models=frozenset((r.models or ())[:rk.MAX_MODELS]), ip_allow=tuple(_networks(r.ip_allow)),
            credit_limit=r.credit_limit, daily_budget=r.daily_budget, monthly_budget=r.monthly_budget, member_allowance=allowance,
            limits=Limits(r.rpm, r.tpm, r.concurrency),
            user_limits=Limits(r.user_rpm, r.user_tpm, r.user_concurrency) if owner else Limits(),
            user_disabled=owner and r.user_status != UserStatus.ACTIVE.value,
            # An organisation's ban is its account's: the relay says "this account" for both.
            user_ban_until=_combined(user_bans.get(r.user_id) if r.user_id is not None else None, org_bans.get(r.account_id)),
            key_ban_until=key_bans.get(r.id),
        )
        records.append(KeyRecord(r.id, r.key_hash, r.account_id, r.spent or 0, view, r.balance))
    return records


def _networks(values) -> list:
    import ipaddress

    return [ipaddress.ip_network(n, strict=False) for n in (values or ())[:rk.MAX_NETWORKS]]


def records_for(key_ids: Iterable[int]) -> Iterator[list[KeyRecord]]:
    for chunk in chunks(key_ids):
        yield build(db.session.execute(key_rows().where(ApiKey.id.in_(chunk))).all())


def key_ids_of_users(user_ids: Iterable[int]) -> set[int]:
    found: set[int] = set()
    for chunk in chunks(user_ids):
        found.update(db.session.scalars(select(ApiKey.id).where(ApiKey.user_id.in_(chunk))))
    return found


def key_ids_of_accounts(account_ids: Iterable[int]) -> set[int]:
    found: set[int] = set()
    for chunk in chunks(account_ids):
        found.update(db.session.scalars(select(ApiKey.id).where(ApiKey.account_id.in_(chunk))))
    return found


def key_ids_of_members(members: Iterable[tuple[int, int]]) -> set[int]:
    found: set[int] = set()
    for account_id, user_id in members:
        found.update(db.session.scalars(select(ApiKey.id).where(ApiKey.account_id == account_id, ApiKey.user_id == user_id)))
    return found


# --- Redis ------------------------------------------------------------------------------------------
def write(redis, records: list[KeyRecord], *, only_missing: bool = False, announce: bool = True, fresh: bool = False) -> None:
    """Write ≤ CHUNK records and what Redis needs to charge them, in one round trip.

    `only_missing` (the rebuild after a Redis loss) never replaces a record the write path put there
    meanwhile. `announce` appends the changed hashes to the relays' change log. `fresh` keys (just
    created in bulk) have spent nothing, so there is no spend to seed."""
    if not records:
        return
    from controlplane.budgets import seed_windows_calls

    balances = {r.account_id: r.balance for r in records}
    pipe = redis.pipeline(transaction=False)
    live = [r for r in records if r.view is not None]
    gone = [r for r in records if r.view is None]
    if gone and redis_keys.CLUSTER:
        # The records spread over a cluster's slots: a command may name keys of one slot only.
        for r in gone:
            pipe.delete(rk.record_key(r.hash))
            pipe.delete(rk.id_key(r.id))
    elif gone:
        pipe.delete(*(rk.record_key(r.hash) for r in gone), *(rk.id_key(r.id) for r in gone))
    if live and (only_missing or redis_keys.CLUSTER):
        for r in live:
            pipe.set(rk.record_key(r.hash), rk.encode(r.view), nx=only_missing)
            pipe.set(rk.id_key(r.id), r.hash, nx=only_missing)
    elif live:
        # One MSET per chunk: packing one command per key is most of the cost at bulk sizes.
        pipe.mset({**{rk.record_key(r.hash): rk.encode(r.view) for r in live}, **{rk.id_key(r.id): r.hash for r in live}})
    if not fresh:
        for r in live:
            pipe.hsetnx(api_key_key(r.account_id, r.id), "spent", r.spent)
        seed_windows_calls(pipe, [r.view for r in live])
    for account_id, balance in balances.items():
        pipe.hsetnx(account_key(account_id), "bal", balance)
    if announce and not redis_keys.CLUSTER:
        append_changes(redis, [r.hash for r in records], pipe)
    pipe.execute()
    if announce and redis_keys.CLUSTER:  # redis-py's cluster pipelines carry no scripts: one more round trip
        append_changes(redis, [r.hash for r in records])


def append_changes(redis, hashes: list[str], pipe=None) -> None:
    """Name changed hashes on the change log (in entries of ≤ CHANGE_BATCH) and wake the relays."""
    from relay.config_store import CHANNEL

    client = pipe if pipe is not None else redis
    for start in range(0, len(hashes), rk.CHANGE_BATCH):
        named = " ".join(hashes[start:start + rk.CHANGE_BATCH])
        # EVAL, not EVALSHA: a pipeline with registered scripts checks them in an extra round trip.
        client.eval(rk.APPEND_CHANGE_LUA, 2, rk.CHANGES_STREAM, rk.CHANGES_SEQ, rk.CHANGES_MAXLEN, named, CHANNEL, rk.WAKE_MESSAGE)


def sync(redis, key_ids: set[int], user_ids: set[int], members: set[tuple[int, int]], account_ids: set[int] | None = None) -> int:
    """Rewrite the records of the keys a unit of work touched (directly, through their user, through
    a membership, or through their account); returns how many."""
    wanted = set(key_ids) | key_ids_of_users(user_ids) | key_ids_of_members(members) | key_ids_of_accounts(account_ids or ())
    written = 0
    for records in records_for(wanted):
        write(redis, records)
        written += len(records)
    return written
