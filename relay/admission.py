"""A request's two Redis round trips: admit, and settle. Plus one per retry.

- `admit` (one Lua script): the caller's rate and concurrency limits, then the first route in the
  selector's order that is not ejected, cooling down, proven dead or at capacity, then the credit
  hold; only when all of that passes does it write anything (counters, leases, the hold, the route's
  capacity slot). A refusal leaves Redis as it was.
- `failover` (one script, only when an attempt failed before the first byte): record that failure in
  passive health, give back the failed route's capacity slot, take the next usable route's.
- `settle` (one script): the money settle (release the hold, charge, queue the usage event) and,
  only if that settle was the first, the leases given back, tokens counted, and the final attempt's
  outcome recorded in passive health — so a request is charged, counted and recorded exactly once.

The money parts are relay/quota.py's own scripts, embedded as Lua functions.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError

from relay import idempotency, quota, redis_keys
from relay.admission_scripts import (ADMIT_CALL, ADMIT_MONEY_CALL, ADMIT_ROUTE_CALL, ADMIT_UNDO_CALL, FAILOVER, MONEY_HALVES, PER_REQUEST,
                                     ROUTE_HALVES, SETTLE_CALL, SETTLE_MONEY_CALL, SETTLE_ROUTE_CALL)
from relay.affinity import Affinity
from relay.affinity import lua_args as affinity_args
from relay.capacity_queue import Queued, QueueSpot
from relay.capacity_queue import admit_args as queue_args
from relay.health import NO_OUTCOME_ARGS, Effect, HealthPolicy, Outcome
from relay.limits import Scope, limit_keys
from relay.quota import Hold
from relay.resp import key_slot_of
from relay.script_batch import BatchedScript
from relay.selector import Plan, Route

if TYPE_CHECKING:
    from redis import Redis

    from relay.snapshot import ChannelView

log = logging.getLogger(__name__)

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
        found = (Scope(f"c:{channel.id}", channel.limits), Scope(f"ck:{self.route.key.id}", channel.key_limits))
        return tuple(s for s in found if s.limits.any)


def _text(values: Iterable[Any]) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def _plan_args(channels: tuple[ChannelView, ...], routes: list[Route]) -> list[Any]:
    index = {c.id: i + 1 for i, c in enumerate(channels)}
    args: list[Any] = [len(channels)]
    for c in channels:
        lim, key = c.limits, c.key_limits
        args += [c.id, lim.rpm or 0, lim.tpm or 0, lim.concurrency or 0, key.rpm or 0, key.tpm or 0, key.concurrency or 0]
    args.append(len(routes))
    for r in routes:
        args += [index[r.channel.id], r.key.id, r.key.since]
    return args


def _plan_keys(channels: tuple[ChannelView, ...], routes: list[Route], now: float) -> list[str]:
    """The keys `read_channels` and `read_routes` take, in their order."""
    keys: list[str] = []
    for c in channels:
        keys += limit_keys(f"c:{c.id}", c.limits, now)
        keys.append(redis_keys.channel_health_key(c.id))
    for r in routes:
        keys += [redis_keys.key_health_key(r.key.id), redis_keys.key_dead_key(r.key.id)]
        keys += limit_keys(f"ck:{r.key.id}", r.channel.key_limits, now)
    return keys


def _scope_args(scopes: tuple[Scope, ...]) -> list[Any]:
    args: list[Any] = [len(scopes)]
    for s in scopes:
        args += s.args()
    return args


def _scope_keys(scopes: tuple[Scope, ...], now: float) -> list[str]:
    return [k for s in scopes for k in s.keys(now)]


def _first_key_slot(keys: Sequence[Any]) -> int:
    return key_slot_of(keys[0])


def _skips(routes: list[Route], flat: list[Any]) -> list[tuple[Route, str]]:
    return [(routes[int(flat[i]) - 1], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]


def _answer(raw: Any, routes: list[Route]) -> list[Any]:
    """An admit reply that admits, as text; a refusal or a prior outcome raised."""
    if raw[0] in (b"idem", "idem"):
        raise idempotency.prior_from_reply(raw)
    reply = _text(raw)
    tag = reply[0]
    if tag == "limit":
        raise LimitRefused(reply[1], reply[2], int(reply[3]))
    if tag == "route":
        raise NoRoute(int(reply[1]), _skips(routes, reply[3:]), reply[2] == 1)
    if tag == "queue":
        raise Queued(int(reply[1]))
    if tag == "money":
        raise quota.refusal(int(reply[1]), int(reply[2]))
    return reply


class Gate:
    """The relay's Redis side of a request: admit, fail over, settle."""

    def __init__(self, redis: Redis[bytes], policy: HealthPolicy, lease_seconds: float, clock: Callable[[], float] = time.time,
                 register: Callable[[str], Callable[..., Any]] | None = None, generation_ttl: int = 0,
                 batch_size: int = 32, batch_in_flight: int = 2, split: bool | None = None):
        """`register(text)` makes a callable script; the relay passes relay/resp.py's lean one.
        `generation_ttl`: how long settle keeps each request's record for GET /v1/generation.
        `batch_size`, `batch_in_flight`: how admits (and settles) of concurrent requests share
        round trips (relay/script_batch.py). `split`: run admit and settle as their money and route
        halves, each on its own slot (the default when the money is spread over buckets)."""
        self.redis = redis
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.generation_ttl = generation_ttl
        self.clock = clock
        self.split = redis_keys.SPREAD if split is None else split
        self._touched = 0.0  # when this process last wrote the last-success time (health's network detector)
        register = register or redis.register_script
        # Admit and settle run once or more per request, so concurrent ones share a round trip
        # (relay/script_batch.py); a failover is rare and goes alone. A script call's keys must
        # share a slot (a cluster refuses a command whose keys span slots, whatever the script's
        # flags): split, the money halves batch per master, a batch running as one call per slot
        # among its calls, all in one pipeline. Per master, so that a master that hangs holds up
        # the requests of its own buckets only.
        self._per_request = BatchedScript(register(PER_REQUEST if not self.split else ROUTE_HALVES), batch_size, batch_in_flight)
        self._money_script = register(MONEY_HALVES)
        self._node_of: Callable[[Any], Any] | None = getattr(self._money_script, "node_of", None)
        self._money_batches: dict[Any, BatchedScript] = {}
        self._batch_size, self._batch_in_flight = batch_size, batch_in_flight
        # Where a hold goes that the split admit made and could not undo (relay/billing.py's
        # `Charges.abandon`, set by the pipeline that owns both).
        self.strand: Callable[[str, int, str], None] | None = None
        self._failover = register(FAILOVER)

    def admit(self, money: MoneyHold, scopes: tuple[Scope, ...], plan: Plan, claim: idempotency.Claim | None = None,
              affinity: Affinity | None = None, queue: QueueSpot | None = None) -> Admission:
        """Raises `idempotency.Prior` when `claim`'s key was seen before. `affinity`: the
        conversation's pin, whose route is tried first (relay/affinity.py). `queue`: the model's
        capacity queue (relay/capacity_queue.py) when the group waits for capacity; raises `Queued`
        when others wait ahead."""
        now = self.clock()
        routes = list(plan.routes)
        hold = quota.hold_record(money.request_id, money.account_id, money.key_id, money.amount, money.budgets, money.user_id, money.started_at)
        money_keys, margs = quota.hold_call(hold, money.key_limit, money.expires_at, money.budgets, money.least)
        idem = claim.admit_args() if claim is not None else []
        claim_keys = [claim.redis_key] if claim is not None else []
        money_args = [money.request_id, len(margs), *margs, len(idem), *idem]
        pin_keys, pin_args = affinity_args(affinity, plan.channels)
        queue_keys, queue_argv = queue_args(queue, now)
        route_keys = [*_scope_keys(scopes, now), *_plan_keys(plan.channels, routes, now), *pin_keys, *queue_keys]
        route_args = [now, now + self.lease_seconds, *_scope_args(scopes), *_plan_args(plan.channels, routes), *pin_args, *queue_argv]
        if self.split:
            reply = self._admit_split(hold, money.key_limit, money_keys, money_args, claim_keys, route_keys, route_args, routes)
        else:
            reply = _answer(self._per_request(keys=[*money_keys, *route_keys, *claim_keys],
                                              args=[ADMIT_CALL, len(money_keys), *money_args, *route_args]), routes)
        route = routes[int(reply[2]) - 1]
        reserved = int(reply[1])
        if reserved != hold.amount:
            hold = replace(hold, amount=reserved)
        return Admission(hold, scopes, plan, route, reply[3] == 1, _skips(routes, reply[5:]), [route.ids], {route.attempt_key}, affinity,
                         reply[4])

    def _admit_split(self, hold: Hold, key_limit: int | None, money_keys: list[Any], money_args: list[Any], claim_keys: list[str],
                     route_keys: list[Any], route_args: list[Any], routes: list[Route]) -> list[Any]:
        """The money half on the account's bucket, then the route half; a refusal of the route half
        undoes the money half (one more call), so that a refusal still leaves nothing held."""
        reserved = _answer(self._money(
            keys=[*money_keys, *claim_keys], args=[ADMIT_MONEY_CALL, len(money_keys), *money_args]), routes)[1]
        try:
            reply = _answer(self._per_request(keys=route_keys, args=[ADMIT_ROUTE_CALL, hold.request_id, *route_args]), routes)
        except BaseException:  # a refusal, Redis failing, or this greenlet stopped between the halves
            try:
                self._undo(hold, key_limit, claim_keys)
            except Exception as error:
                # Redis failing (a cluster between a master's loss and its replica's promotion
                # answers CLUSTERDOWN everywhere): the hold is journaled, and released once Redis
                # answers, instead of waiting for its expiry. The request ends here as Redis being
                # unavailable: a refusal it could wait out (the capacity queue) would admit this
                # request id again, and the journaled release would then free that new hold.
                log.exception("could not release the hold of %s after its route half failed", hold.request_id)
                if self.strand is not None:
                    self.strand(hold.request_id, hold.account_id, claim_keys[0] if claim_keys else "")
                raise RedisConnectionError(f"Redis failed between the halves of an admission: {error}") from error
            raise
        reply[1] = reserved
        return reply

    def _money(self, keys: list[Any], args: list[Any]) -> Any:
        node = self._node_of(keys[0]) if self._node_of is not None else None
        batches = self._money_batches.get(node)
        if batches is None:
            batches = self._money_batches.setdefault(
                node, BatchedScript(self._money_script, self._batch_size, self._batch_in_flight, slot_of=_first_key_slot))
        return batches(keys=keys, args=args)

    def _undo(self, hold: Hold, key_limit: int | None, claim_keys: list[str]) -> None:
        bucket = redis_keys.money_bucket(hold.account_id)
        scopes = [redis_keys.account_key(hold.account_id)]
        if key_limit is not None:
            scopes.append(redis_keys.api_key_key(hold.account_id, hold.key_id))
        scopes += [w for w, reserving in zip(hold.windows, hold.reserved, strict=True) if reserving]
        keys = [redis_keys.hold_key(bucket, hold.request_id), redis_keys.holds_key(bucket), *scopes, *claim_keys]
        self._money(keys=keys, args=[ADMIT_UNDO_CALL, hold.request_id, len(scopes), 1 if claim_keys else 0])

    def failover(self, admission: Admission, failed: Outcome, remaining: list[Route]) -> tuple[Route | None, int, list[Any]]:
        """Record the failed attempt and move to the first usable route of `remaining`.

        Returns (the new route or None, seconds to wait when only capacity stood in the way, the
        health record of the failure).
        """
        now = self.clock()
        rid = admission.hold.request_id
        route_scopes = admission.route_scopes()
        pin_keys, pin_args = affinity_args(admission.affinity, admission.plan.channels)
        keys = [*failed.keys(), *_scope_keys(route_scopes, now), *_plan_keys(admission.plan.channels, remaining, now), *pin_keys]
        args = [now, rid, now + self.lease_seconds, *self.policy.args(), *failed.args(), *_scope_args(route_scopes),
                *_plan_args(admission.plan.channels, remaining), *pin_args]
        reply = _text(self._failover(keys=keys, args=args))
        pick, panic, wait, record = int(reply[0]), reply[1] == 1, int(reply[2]), reply[3:6]
        admission.skips = _skips(remaining, reply[6:])
        admission.panic = panic
        if pick == 0:
            return None, wait, record
        admission.route = remaining[pick - 1]
        admission.tried.append(admission.route.ids)
        admission.attempted.add(admission.route.attempt_key)
        return admission.route, wait, record

    def settle(self, admission: Admission, cost: int, event: bytes, tokens: int, outcome: Outcome | None,
               record: list[Any] | None = None) -> tuple[bool, list[Any], int]:
        """Settle once: money, leases, tokens, health, and `record` (relay/generation.py's
        `settle_args`) kept for GET /v1/generation. Returns (settled now, the health record, the
        amount charged); (False, [], 0) when it was already settled."""
        now = self.clock()
        hold = admission.hold
        money_keys, margs = quota.settle_call(hold, cost, event)
        gen_key = redis_keys.generation_key(hold.account_id, hold.request_id)
        money_args = [len(margs), *margs, *(record or [0])]
        scopes = admission.scopes + admission.route_scopes()
        outcome_args = NO_OUTCOME_ARGS
        if outcome is not None:
            touch = outcome.effect is Effect.OK and not 0 <= now - self._touched < 1.0
            if touch:
                self._touched = now
            outcome_args = [*outcome.args(touch), *(self.policy.args() if outcome.needs_policy else ())]
        route_keys = [*_scope_keys(scopes, now), *(outcome.keys() if outcome is not None else [])]
        route_args = [now, hold.request_id, tokens, *_scope_args(scopes), *outcome_args]
        if not self.split:
            reply = _text(self._per_request(keys=[*money_keys, *route_keys, gen_key],
                                            args=[SETTLE_CALL, len(money_keys), *money_args, *route_args]))
            if reply[0] != 1:
                return False, [], 0
            return True, reply[2:], int(reply[1])
        reply = _text(self._money(
            keys=[*money_keys, gen_key], args=[SETTLE_MONEY_CALL, len(money_keys), *money_args]))
        if reply[0] != 1:
            return False, [], 0
        charged = int(reply[1])
        if not route_keys:
            return True, [], charged
        try:
            record_reply = _text(self._per_request(keys=route_keys, args=[SETTLE_ROUTE_CALL, *route_args]))
        except Exception:
            # Charged already, which is what must happen once; the leases lapse by themselves.
            log.exception("request %s settled; its leases, tokens and health outcome were not recorded", hold.request_id)
            return True, [], charged
        return True, record_reply[2:], charged
