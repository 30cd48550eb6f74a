"""A request's Redis work: admit, and settle, plus a failover per retry.

On one Redis server (and on a cluster with the money unspread) each is one script call:

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

Split (Redis Cluster with the money spread over buckets; relay/redis_keys.py), each is a call on
each slot it touches: relay/split_admission.py.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from relay import idempotency, quota, redis_keys
from relay.admission_calls import (Admission, LimitRefused, MoneyHold, NoRoute, answer, lease_keys, plan_args, plan_keys, scope_args,
                                   scope_keys, skips_of, text)
from relay.admission_scripts import ADMIT_CALL, FAILOVER, PER_REQUEST, SETTLE_CALL, SPLIT_CALLS
from relay.affinity import Affinity
from relay.affinity import lua_args as affinity_args
from relay.capacity_queue import QueueSpot
from relay.capacity_queue import admit_args as queue_args
from relay.health import NO_OUTCOME_ARGS, Effect, HealthPolicy, Outcome
from relay.limits import Scope
from relay.script_batch import BatchedScript
from relay.selector import Plan, Route
from relay.split_admission import QUEUE_QUIET_SECONDS, SplitGate

if TYPE_CHECKING:
    from redis import Redis

# What callers take from here; the pieces live in relay/admission_calls.py and relay/split_admission.py.
__all__ = ["Admission", "Gate", "LimitRefused", "MoneyHold", "NoRoute", "QUEUE_QUIET_SECONDS", "lease_keys"]

class Gate:
    """The relay's Redis side of a request: admit, fail over, settle."""

    def __init__(self, redis: Redis[bytes], policy: HealthPolicy, lease_seconds: float, clock: Callable[[], float] = time.time,
                 register: Callable[[str], Callable[..., Any]] | None = None, generation_ttl: int = 0,
                 batch_size: int = 32, batch_in_flight: int = 2, split: bool | None = None):
        """`register(text)` makes a callable script; the relay passes relay/resp.py's lean one.
        `generation_ttl`: how long settle keeps each request's record for GET /v1/generation.
        `batch_size`, `batch_in_flight`: how admits (and settles) of concurrent requests share
        round trips (relay/script_batch.py). `split`: run admit and settle as calls on the slots of
        what they touch (the money, each channel tried, the other scopes), the default when the
        money is spread over buckets (Redis Cluster; relay/redis_keys.py)."""
        self.redis = redis
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.generation_ttl = generation_ttl
        self.clock = clock
        self.split = redis_keys.SPREAD if split is None else split
        self._touched = 0.0  # when this process last wrote the last-success time (health's network detector)
        register = register or redis.register_script
        # Admit and settle run once or more per request, so concurrent ones share a round trip
        # (relay/script_batch.py); a failover is rare and goes alone. Split, a script call's keys
        # must share a slot (a cluster refuses a command whose keys span slots, whatever the
        # script's flags): relay/split_admission.py.
        self._split: SplitGate | None = None
        if self.split:
            self._split = SplitGate(redis, policy, lease_seconds, register(SPLIT_CALLS), batch_size, batch_in_flight)
        else:
            self._per_request = BatchedScript(register(PER_REQUEST), batch_size, batch_in_flight)
            self._failover = register(FAILOVER)

    @property
    def strand(self) -> Callable[[str, int, str, tuple[str, ...]], None] | None:
        """Where a hold goes that the split admit made and could not undo (relay/billing.py's
        `Charges.abandon`, set by the pipeline that owns both)."""
        return self._split.strand if self._split is not None else None

    @strand.setter
    def strand(self, abandon: Callable[[str, int, str, tuple[str, ...]], None] | None) -> None:
        if self._split is not None:
            self._split.strand = abandon

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
        if self._split is not None:
            return self._split.admit(hold, money.key_limit, money_keys, money_args, claim_keys, scopes, plan, affinity, queue, now)
        pin_keys, pin_args = affinity_args(affinity, plan.channels)
        queue_keys, queue_argv = queue_args(queue, now)
        route_keys = [*scope_keys(scopes, now), *plan_keys(plan.channels, routes, now), *pin_keys, *queue_keys]
        route_args = [now, now + self.lease_seconds, *scope_args(scopes), *plan_args(plan.channels, routes), *pin_args, *queue_argv]
        reply = answer(self._per_request(keys=[*money_keys, *route_keys, *claim_keys],
                                          args=[ADMIT_CALL, len(money_keys), *money_args, *route_args]), routes)
        route = routes[int(reply[2]) - 1]
        reserved = int(reply[1])
        if reserved != hold.amount:
            hold = replace(hold, amount=reserved)
        return Admission(hold, scopes, plan, route, reply[3] == 1, skips_of(routes, reply[5:]), [route.ids], {route.attempt_key}, affinity,
                         reply[4])

    def failover(self, admission: Admission, failed: Outcome, remaining: list[Route]) -> tuple[Route | None, int, list[Any]]:
        """Record the failed attempt and move to the first usable route of `remaining`.

        Returns (the new route or None, seconds to wait when only capacity stood in the way, the
        health record of the failure).
        """
        now = self.clock()
        rid = admission.hold.request_id
        route_scopes = admission.route_scopes()
        if self._split is not None:
            pick, wait, record = self._split.failover(admission, failed, remaining, now)
        else:
            pin_keys, pin_args = affinity_args(admission.affinity, admission.plan.channels)
            keys = [*failed.keys(), *scope_keys(route_scopes, now), *plan_keys(admission.plan.channels, remaining, now), *pin_keys]
            args = [now, rid, now + self.lease_seconds, *self.policy.args(), *failed.args(), *scope_args(route_scopes),
                    *plan_args(admission.plan.channels, remaining), *pin_args]
            reply = text(self._failover(keys=keys, args=args))
            pick, admission.panic, wait, record = int(reply[0]), reply[1] == 1, int(reply[2]), reply[3:6]
            admission.skips = skips_of(remaining, reply[6:])
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
        if self._split is not None:
            return self._split.settle_split(admission, money_keys, money_args, gen_key, tokens, outcome, now)
        scopes = admission.scopes + admission.route_scopes()
        outcome_args = NO_OUTCOME_ARGS
        if outcome is not None:
            touch = outcome.effect is Effect.OK and not 0 <= now - self._touched < 1.0
            if touch:
                self._touched = now
            outcome_args = [*outcome.args(touch), *(self.policy.args() if outcome.needs_policy else ())]
        route_keys = [*scope_keys(scopes, now), *(outcome.keys() if outcome is not None else [])]
        route_args = [now, hold.request_id, tokens, *scope_args(scopes), *outcome_args]
        reply = text(self._per_request(keys=[*money_keys, *route_keys, gen_key],
                                        args=[SETTLE_CALL, len(money_keys), *money_args, *route_args]))
        if reply[0] != 1:
            return False, [], 0
        return True, reply[2:], int(reply[1])

