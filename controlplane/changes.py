"""What a unit of work changed that the relays must hear about, noticed as the session flushes.

Every ORM write to a key, a user, a membership or a ban marks the key records it affects; a write to
a channel, channel key, group, price, model route or an address ban marks the routing snapshot. The service
layer's `commit` (controlplane/services/base.py) then rewrites exactly those records and, only when
routing changed, publishes a new snapshot — so a write costs O(what it touched), not O(customers).

Marks survive a direct `db.session.commit()` and are sent by the next service commit on the same
session; a rolled-back mark only costs a rewrite of records from what SQL says.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import event, inspect

from controlplane.models import (
    ApiKey,
    Ban,
    Channel,
    ChannelKey,
    Group,
    Membership,
    ModelPrice,
    ModelRoute,
    User,
)

INFO_KEY = "switchboard.changes"

# The columns a key record is built from (relay/keys.py); `spent`, `name`, `last_used_at` are not.
KEY_COLUMNS = ("account_id", "user_id", "key_hash", "prefix", "credit_limit", "daily_budget", "monthly_budget", "rpm", "tpm",
               "concurrency", "models", "ip_allow", "expires_at", "status")
USER_COLUMNS = ("status", "group_id", "rpm", "tpm", "concurrency")
MEMBER_COLUMNS = ("account_id", "user_id", "monthly_allowance")
BAN_COLUMNS = ("kind", "subject", "expires_at", "lifted_at")
ROUTING = (Channel, ChannelKey, Group, ModelPrice, ModelRoute)


@dataclass
class Changes:
    key_ids: set[int] = field(default_factory=set)
    user_ids: set[int] = field(default_factory=set)
    members: set[tuple[int, int]] = field(default_factory=set)  # (account id, user id)
    account_ids: set[int] = field(default_factory=set)  # every key charged to the account
    routing: bool = False

    def __bool__(self) -> bool:
        return bool(self.key_ids or self.user_ids or self.members or self.account_ids or self.routing)


def pending(session) -> Changes:
    return session.info.setdefault(INFO_KEY, Changes())


def take(session) -> Changes:
    """The marks so far, cleared from the session (the caller sends them)."""
    return session.info.pop(INFO_KEY, None) or Changes()


def _changed(obj, columns) -> bool:
    state = inspect(obj)
    return any(state.attrs[c].history.has_changes() for c in columns)


def _note_ban(changes: Changes, ban: Ban) -> None:
    if ban.kind == "user" and str(ban.subject).isdigit():
        changes.user_ids.add(int(ban.subject))
    elif ban.kind == "key" and str(ban.subject).isdigit():
        changes.key_ids.add(int(ban.subject))
    elif ban.kind == "org" and str(ban.subject).isdigit():
        changes.account_ids.add(int(ban.subject))
    else:
        changes.routing = True


def _note(changes: Changes, obj, how: str) -> None:
    if isinstance(obj, ROUTING):
        changes.routing = True
    elif isinstance(obj, ApiKey):
        if how != "dirty" or _changed(obj, KEY_COLUMNS):
            changes.key_ids.add(obj.id)
    elif isinstance(obj, User):
        # A new user has no keys yet; a deleted one's keys are marked by their own rows.
        if how == "dirty" and _changed(obj, USER_COLUMNS):
            changes.user_ids.add(obj.id)
    elif isinstance(obj, Membership):
        if how != "dirty" or _changed(obj, MEMBER_COLUMNS):
            changes.members.add((obj.account_id, obj.user_id))
    elif isinstance(obj, Ban) and (how != "dirty" or _changed(obj, BAN_COLUMNS)):
        _note_ban(changes, obj)


def _after_flush(session, flush_context) -> None:
    changes = pending(session)
    for how, objects in (("new", session.new), ("dirty", session.dirty), ("deleted", session.deleted)):
        for obj in objects:
            _note(changes, obj, how)


def install(scoped_session) -> None:
    """Watch every flush of the app's session (idempotent)."""
    if not event.contains(scoped_session, "after_flush", _after_flush):
        event.listen(scoped_session, "after_flush", _after_flush)
