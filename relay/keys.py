"""An API key as the relay sees it, and the record the control plane keeps for it in Redis.

What grows with customers (keys, their owners' status, limits, bans and budgets) is not in the
routing snapshot: each key is one small record under its sha256 (relay/redis_keys.py), written by the control plane
in the same write path that changes SQL, and read by relays on a cache miss (relay/key_cache.py).
Everything a request needs about its caller is folded into that one record (user status, user
limits, bans of the user or the key), so a miss costs exactly one Redis round trip.

The encoding is a positional JSON array behind a format number: at a million keys the record's
size is the Redis memory bill, and field names would double it.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import orjson

from relay import redis_keys
from relay.snapshot import NO_LIMITS, Limits, Status

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RECORD_FORMAT = 1
# Bounds on what a record may carry (the control plane validates the same numbers).
MAX_MODELS = 100
MAX_NETWORKS = 100

# Redis names. A record per key hash; an id → hash index for the console's playground tokens, which
# name keys by id; and the change log relays follow to drop what they cached (relay/key_cache.py).
RECORD_PREFIX = redis_keys.KEY_RECORD_PREFIX
ID_PREFIX = redis_keys.KEY_ID_PREFIX
# The change log and its sequence share a hash tag: the script appending to both touches one slot.
CHANGES_STREAM = redis_keys.KEY_CHANGES
CHANGES_SEQ = redis_keys.KEY_CHANGES_SEQ
CHANGES_MAXLEN = 100_000  # entries (each names ≤ CHANGE_BATCH keys); older ones are trimmed
CHANGE_BATCH = 500
EVERYTHING = "*"  # a change entry that tells relays to drop their whole cache (after a rebuild)
# Set once every record has been (re)built from SQL; its absence means Redis lost them.
READY_KEY = redis_keys.KEYS_READY
WAKE_MESSAGE = "keys"  # published on the config channel after a change is logged

# Append one change entry with the next sequence number as its id, and wake the relays.
APPEND_CHANGE_LUA = """
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], n .. '-0', 'h', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
"""


def record_key(key_hash: str) -> str:
    return RECORD_PREFIX + key_hash


def id_key(key_id: int) -> str:
    return f"{ID_PREFIX}{key_id}"


@dataclass(frozen=True, slots=True)
class KeyView:
    """An API key and what the relay must know about its owner; looked up by the SHA-256 of the
    presented secret."""

    id: int
    account_id: int
    user_id: int | None
    group: str
    prefix: str
    status: str = Status.ENABLED
    expires_at: float | None = None
    models: frozenset[str] = frozenset()  # empty: whatever the group allows
    ip_allow: tuple[IPNetwork, ...] = ()
    credit_limit: int | None = None  # µ$; None is unlimited
    # --- spend windows, µ$, None is unlimited; enforced by the hold in relay/quota.py ---
    daily_budget: int | None = None  # this key, per UTC calendar day
    monthly_budget: int | None = None  # this key, per UTC calendar month
    member_allowance: int | None = None  # this key's user within an organisation account, per UTC month
    limits: Limits = NO_LIMITS
    # --- the owner, folded in so one read answers every check ---
    user_limits: Limits = NO_LIMITS  # across all the user's keys
    user_disabled: bool = False
    # Bans in force: None is none; otherwise the ban's end (epoch), or 0.0 for a ban with no end.
    user_ban_until: float | None = None
    key_ban_until: float | None = None

    def allows_model(self, model: str) -> bool:
        return not self.models or model in self.models

    def allows_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if not self.ip_allow:
            return True
        return ip is not None and any(ip in net for net in self.ip_allow)

    def banned_at(self, now: float) -> str | None:
        """"user" or "key" when a ban of the user or of this key is in force at `now`."""
        for kind, until in (("user", self.user_ban_until), ("key", self.key_ban_until)):
            if until is not None and (until == 0.0 or now < until):
                return kind
        return None


def _limits(raw: list[int | None] | None) -> Limits:
    return Limits(*raw) if raw and any(raw) else NO_LIMITS


def encode(key: KeyView) -> bytes:
    return orjson.dumps([
        RECORD_FORMAT, key.id, key.account_id, key.user_id, key.group, key.prefix, key.status, key.expires_at,
        sorted(key.models), [str(n) for n in key.ip_allow], key.credit_limit, key.daily_budget, key.monthly_budget,
        key.member_allowance, key.limits.to_payload(), key.user_limits.to_payload(), key.user_disabled,
        key.user_ban_until, key.key_ban_until,
    ])


def decode(raw: bytes) -> KeyView:
    (fmt, key_id, account_id, user_id, group, prefix, status, expires_at, models, ip_allow, credit_limit, daily, monthly,
     allowance, limits, user_limits, user_disabled, user_ban, key_ban) = orjson.loads(raw)
    if fmt != RECORD_FORMAT:
        raise ValueError(f"unknown key record format {fmt}")
    return KeyView(
        id=key_id, account_id=account_id, user_id=user_id, group=group, prefix=prefix, status=status, expires_at=expires_at,
        models=frozenset(models[:MAX_MODELS]) if models else frozenset(),
        ip_allow=tuple(ipaddress.ip_network(n, strict=False) for n in ip_allow[:MAX_NETWORKS]) if ip_allow else (),
        credit_limit=credit_limit, daily_budget=daily, monthly_budget=monthly, member_allowance=allowance,
        limits=_limits(limits), user_limits=_limits(user_limits), user_disabled=bool(user_disabled),
        user_ban_until=user_ban, key_ban_until=key_ban,
    )
