"""What relay/admission.py's two paths share: a request's admission as the relay holds it, the
refusals, and the KEYS and ARGV the admission scripts read (relay/admission_scripts.py), in the
order their readers take them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from relay import idempotency, quota, redis_keys
from relay.affinity import Affinity
from relay.capacity_queue import Queued
from relay.limits import Scope, limit_keys
from relay.quota import Hold
from relay.selector import Plan, Route

if TYPE_CHECKING:
    from relay.snapshot import ChannelView


class LimitRefused(Exception):
    def __init__(self, scope: str, which: str, retry_after: int):
        super().__init__(f"{scope} over its {which} limit")
        self.scope, self.which, self.retry_after = scope, which, retry_after


class NoRoute(Exception):
    """No route can serve now: at capacity or cooling down (retry_after > 0), or none at all."""

    def __init__(self, retry_after: int, skips: list[Any], panic: bool):
        super().__init__("no usable route")
        self.retry_after, self.skips, self.panic = retry_after, skips, panic


@dataclass(frozen=True, slots=True)
class MoneyHold:
    request_id: str
    account_id: int
    key_id: int
    amount: int
    key_limit: int | None
    expires_at: float
    budgets: quota.Budgets = quota.NO_BUDGETS  # spend windows
    user_id: int | None = None
    started_at: float | None = None  # names the spend windows
    least: int | None = None  # a flexible hold: reserve as much of `amount` as there is room for, at least this


@dataclass(slots=True)
class Admission:
    """What a request holds in Redis: money, the caller's slots, and the current route's slot."""

    hold: Hold
    scopes: tuple[Scope, ...]
    plan: Plan
    route: Route
    panic: bool = False
    skips: list[Any] = field(default_factory=list)  # [(route, why)] from the latest pick
    tried: list[Any] = field(default_factory=list)  # [(channel id, key id)] in attempt order
    attempted: set[tuple[int, int, str]] = field(default_factory=set)  # the tried routes' attempt keys
    affinity: Affinity | None = None  # the conversation's pin, moved along on failover (relay/affinity.py)
    pinned: str = ""  # how the pin fared at admission: kept | moved | new ('' without affinity)

    def route_scopes(self) -> tuple[Scope, ...]:
        channel = self.route.channel
        prefix = redis_keys.channel_prefix(channel.id)
        found = (Scope(f"c:{channel.id}", channel.limits, prefix), Scope(f"ck:{self.route.key.id}", channel.key_limits, prefix))
        return tuple(s for s in found if s.limits.any)


def text(values: Iterable[Any]) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def plan_args(channels: tuple[ChannelView, ...], routes: list[Route]) -> list[Any]:
    index = {c.id: i + 1 for i, c in enumerate(channels)}
    args: list[Any] = [len(channels)]
    for c in channels:
        lim, key = c.limits, c.key_limits
        args += [c.id, lim.rpm or 0, lim.tpm or 0, lim.concurrency or 0, key.rpm or 0, key.tpm or 0, key.concurrency or 0]
    args.append(len(routes))
    for r in routes:
        args += [index[r.channel.id], r.key.id, r.key.since]
    return args


def plan_keys(channels: tuple[ChannelView, ...], routes: list[Route], now: float) -> list[str]:
    """The keys `read_channels` and `read_routes` take, in their order."""
    keys: list[str] = []
    for c in channels:
        keys += limit_keys(f"c:{c.id}", c.limits, now, redis_keys.channel_prefix(c.id))
        keys.append(redis_keys.channel_health_key(c.id))
    for r in routes:
        cid = r.channel.id
        keys += [redis_keys.key_health_key(cid, r.key.id), redis_keys.key_dead_key(cid, r.key.id)]
        keys += limit_keys(f"ck:{r.key.id}", r.channel.key_limits, now, redis_keys.channel_prefix(cid))
    return keys


def scope_args(scopes: tuple[Scope, ...]) -> list[Any]:
    args: list[Any] = [len(scopes)]
    for s in scopes:
        args += s.args()
    return args


def scope_keys(scopes: tuple[Scope, ...], now: float) -> list[str]:
    return [k for s in scopes for k in s.keys(now)]


def lease_keys(scopes: Iterable[Scope], plan: Plan) -> tuple[str, ...]:
    """The concurrency slots an admission of `scopes` over `plan` may take: the lease sets of the
    caller's scopes, the plan's channels and their keys (those with a concurrency limit)."""
    limited = [s for s in scopes if s.limits.concurrency]
    for c in plan.channels:
        if c.limits.concurrency:
            limited.append(Scope(f"c:{c.id}", c.limits, redis_keys.channel_prefix(c.id)))
    for r in plan.routes:
        if r.channel.key_limits.concurrency:
            limited.append(Scope(f"ck:{r.key.id}", r.channel.key_limits, redis_keys.channel_prefix(r.channel.id)))
    return tuple(dict.fromkeys(redis_keys.lease_key(s.prefix, s.name) for s in limited))


def skips_of(routes: list[Route], flat: list[Any]) -> list[tuple[Route, str]]:
    return [(routes[int(flat[i]) - 1], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]


def answer(raw: Any, routes: list[Route]) -> list[Any]:
    """An admit reply that admits, as text; a refusal or a prior outcome raised."""
    if raw[0] in (b"idem", "idem"):
        raise idempotency.prior_from_reply(raw)
    reply = text(raw)
    tag = reply[0]
    if tag == "limit":
        raise LimitRefused(reply[1], reply[2], int(reply[3]))
    if tag == "route":
        raise NoRoute(int(reply[1]), skips_of(routes, reply[3:]), reply[2] == 1)
    if tag == "queue":
        raise Queued(int(reply[1]))
    if tag == "money":
        raise quota.refusal(int(reply[1]), int(reply[2]))
    return reply


