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

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable

from relay import generation, idempotency, quota, redis_keys
from relay.affinity import AFFINITY_LUA, Affinity
from relay.affinity import lua_args as affinity_args
from relay.capacity_queue import QUEUE_LUA, Queued, QueueSpot
from relay.capacity_queue import admit_args as queue_args
from relay.health import ARG_READER_LUA, HEALTH_LUA, NO_OUTCOME_ARGS, Effect, HealthPolicy, Outcome
from relay.limits import LIMITS_LUA, Scope, limit_keys
from relay.quota import Hold
from relay.script_batch import BatchedScript, batch_lua
from relay.selector import Plan, Route

if TYPE_CHECKING:
    from redis import Redis

    from relay.snapshot import ChannelView

_ROUTES_LUA = r"""
-- Per channel: its limits (with their keys), its keys' limits, its health hash. Per route: the
-- key's health hash and dead mark, then its limits' keys (relay/admission.py's _plan_keys).
local function read_channels()
  local cs = {}
  for i = 1, num() do
    local c = {id = nxt()}
    c.lim = l_keys({rpm = num(), tpm = num(), conc = num()})
    c.klim = {rpm = num(), tpm = num(), conc = num()}
    c.hc = nkey()
    cs[i] = c
  end
  return cs
end

local function read_routes(cs)
  local rs = {}
  for i = 1, num() do
    local r = {ci = num(), key = nxt(), since = num()}
    local k = cs[r.ci].klim
    r.hk, r.dead = nkey(), nkey()
    r.lim = l_keys({rpm = k.rpm, tpm = k.tpm, conc = k.conc})
    rs[i] = r
  end
  return rs
end

-- The first route that can serve now: {index or 0, panic, skips {index, why, ...}, seconds to wait}.
-- More than half of the model's channels ejected is a panic: ejections are ignored (Envoy's panic).
local function pick_route(cs, rs, now)
  local ejected, n_ej = {}, 0
  for i, c in ipairs(cs) do
    if h_channel_ejected(c.hc, now) then ejected[i] = true n_ej = n_ej + 1 end
  end
  local panic = n_ej * 2 > #cs
  local skips, wait, blocked = {}, 0, {}
  local function skip(j, why, w)
    if #skips < 64 then skips[#skips + 1] = j skips[#skips + 1] = why end
    if w > 0 and (wait == 0 or w < wait) then wait = w end
  end
  for j, r in ipairs(rs) do
    local c = cs[r.ci]
    if blocked[r.ci] then
      -- the whole channel is out; it is in the trace once
    elseif ejected[r.ci] and not panic then
      blocked[r.ci] = true
      skip(j, 'channel_ejected', 0)
    else
      local why, untill = h_key_unusable(r.hk, r.dead, r.since, now, panic)
      if why then
        skip(j, why, untill > 0 and math.ceil(untill - now) or 0)
      else
        local cwhy, cwait = l_check(c.lim, now)
        if cwhy then
          blocked[r.ci] = true
          skip(j, 'channel_' .. cwhy, cwait)
        else
          local kwhy, kwait = l_check(r.lim, now)
          if not kwhy then return j, panic, skips, 0 end
          skip(j, 'key_' .. kwhy, kwait)
        end
      end
    end
  end
  return 0, panic, skips, wait
end

local function take_route(c, r, rid, lease, now)
  l_take(c.lim, rid, lease, now)
  l_take(r.lim, rid, lease, now)
end

local function read_list()
  local out = {}
  for i = 1, num() do out[i] = nxt() end
  return out
end
"""

_PRELUDE = ARG_READER_LUA + HEALTH_LUA + LIMITS_LUA + _ROUTES_LUA + AFFINITY_LUA + QUEUE_LUA


def _function(name: str, body: str) -> str:
    return f"local function {name}(KEYS, ARGV)\n{body}\nend\n"


# An idempotency key seen before answers first, whatever the limits, routes or balance are now
# (relay/idempotency.py); a new one is marked in progress only when everything else passed.
# KEYS: the hold's (fixed: money_hold reads them by position), then what the readers take in order
# (the caller's scopes, the plan's channels and routes, the conversation's pin, the capacity queue),
# then the idempotency claim, last. While a queue waits only its head may take a route.
_ADMIT_BODY = r"""
kpos = num()
local now, rid, lease = num(), nxt(), num()
local scopes = {}
for i = 1, num() do scopes[i] = l_scope() end
local cs = read_channels()
local rs = read_routes(cs)
local margs = read_list()
local idem = read_list()
local aff, aff_ttl, tiers = a_read()
local q = q_read()
if #idem > 0 then
  local prior = idem_prior(KEYS[#KEYS], idem[1])
  if prior then return prior end
end
for _, s in ipairs(scopes) do
  local which, wait = l_check(s, now)
  if which then return {'limit', s.name, which, wait} end
end
if q then
  local rank = q_gate(q, now, q.ticket, q.beat_until)
  if rank then return {'queue', rank} end
end
local pick, panic, skips, wait, how = a_pick(cs, rs, now, aff, tiers)
if pick == 0 then return {'route', wait, panic and 1 or 0, unpack(skips)} end
local m = money_hold(KEYS, margs)
if m[1] ~= 1 then return {'money', m[1], m[2]} end
for _, s in ipairs(scopes) do l_take(s, rid, lease, now) end
take_route(cs[rs[pick].ci], rs[pick], rid, lease, now)
a_pin(aff, rs[pick], aff_ttl)
if q and q.ticket ~= '' then q_served(q, now, q.ticket) end
if #idem > 0 then idem_mark(KEYS[#KEYS], idem[1], idem[2], rid) end
return {'ok', m[3], pick, panic and 1 or 0, how, unpack(skips)}
"""

# KEYS: the failed attempt's health, the failed route's scopes, the remaining plan's, the pin.
_FAILOVER = _PRELUDE + r"""
local now, rid, lease = num(), nxt(), num()
local P = h_policy()
local rec = h_record(P, now, h_outcome())
for i = 1, num() do
  local s = l_scope()
  l_finish(s, rid, 0)
end
local cs = read_channels()
local rs = read_routes(cs)
local aff, aff_ttl = a_read()
local pick, panic, skips, wait = pick_route(cs, rs, now)
if pick > 0 then
  take_route(cs[rs[pick].ci], rs[pick], rid, lease, now)
  a_pin(aff, rs[pick], aff_ttl)
end
return {pick, panic and 1 or 0, wait, rec[1], rec[2], rec[3], unpack(skips)}
"""

# KEYS: the money settle's (fixed), the scopes', the outcome's health, the generation record last.
# ARGV: the money settle's, then now, the request id, tokens, the scopes, the outcome, the health
# policy (only when the outcome needs it), the generation record.
_SETTLE_BODY = r"""
kpos = num()
local margs = read_list()
local charged = money_settle(KEYS, margs)
if charged < 0 then
  -- No record: Redis lost the hold (restarted without its data) while the request ran, or another
  -- settle took it. The answer was delivered: its event goes to ingestion marked unheld, which
  -- charges it once if SQL has no such request yet, as far as the balance has room.
  redis.call('XADD', KEYS[3], '*', 'e', margs[3], 'unheld', margs[2])
  return {0}
end
local now, rid, tokens = num(), nxt(), num()
for i = 1, num() do
  local s = l_scope()
  l_finish(s, rid, tokens)
end
-- The policy follows the outcome, and only when recording it reads the policy (not a success).
local o = h_outcome()
local P = nil
if o.effect ~= 'ok' and o.effect ~= 'none' then P = h_policy() end
local rec = h_record(P, now, o)
""" + generation.SETTLE_LUA + r"""
return {1, charged, rec[1], rec[2], rec[3]}
"""

# Admits and settles share one script, so that the admits and settles of concurrent requests share
# one batch (relay/script_batch.py): a call's first argument says which it is.
_PER_REQUEST = batch_lua(_PRELUDE + idempotency.CLAIM_LUA + _function("money_hold", quota.HOLD_LUA) + _function("money_settle", quota.SETTLE_LUA),
                         _ADMIT_BODY, _SETTLE_BODY)
_ADMIT_CALL, _SETTLE_CALL = 1, 2


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


def _skips(routes: list[Route], flat: list[Any]) -> list[tuple[Route, str]]:
    return [(routes[int(flat[i]) - 1], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]


class Gate:
    """The relay's Redis side of a request: admit, fail over, settle."""

    def __init__(self, redis: Redis[bytes], policy: HealthPolicy, lease_seconds: float, clock: Callable[[], float] = time.time,
                 register: Callable[[str], Callable[..., Any]] | None = None, generation_ttl: int = 0,
                 batch_size: int = 32, batch_in_flight: int = 2):
        """`register(text)` makes a callable script; the relay passes relay/resp.py's lean one.
        `generation_ttl`: how long settle keeps each request's record for GET /v1/generation.
        `batch_size`, `batch_in_flight`: how admits (and settles) of concurrent requests share
        round trips (relay/script_batch.py)."""
        self.redis = redis
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.generation_ttl = generation_ttl
        self.clock = clock
        self._touched = 0.0  # when this process last wrote the last-success time (health's network detector)
        register = register or redis.register_script
        # Admit and settle run once or more per request, so concurrent ones share a round trip
        # (relay/script_batch.py); a failover is rare and goes alone.
        self._per_request = BatchedScript(register(_PER_REQUEST), batch_size, batch_in_flight)
        self._failover = register(_FAILOVER)

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
        pin_keys, pin_args = affinity_args(affinity, plan.channels)
        queue_keys, queue_argv = queue_args(queue, now)
        keys = [*money_keys, *_scope_keys(scopes, now), *_plan_keys(plan.channels, routes, now), *pin_keys, *queue_keys]
        if claim is not None:
            keys.append(claim.redis_key)
        args = [len(money_keys), now, money.request_id, now + self.lease_seconds, *_scope_args(scopes), *_plan_args(plan.channels, routes),
                len(margs), *margs, len(idem), *idem, *pin_args, *queue_argv]
        raw = self._per_request(keys=keys, args=[_ADMIT_CALL, *args])
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
        route = routes[int(reply[2]) - 1]
        reserved = int(reply[1])
        if reserved != hold.amount:
            hold = replace(hold, amount=reserved)
        return Admission(hold, scopes, plan, route, reply[3] == 1, _skips(routes, reply[5:]), [route.ids], {route.attempt_key}, affinity,
                         reply[4])

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
        money_keys, margs = quota.settle_call(admission.hold, cost, event)
        scopes = admission.scopes + admission.route_scopes()
        keys = [*money_keys, *_scope_keys(scopes, now), *(outcome.keys() if outcome is not None else []),
                generation.record_key(admission.hold.request_id)]
        outcome_args = NO_OUTCOME_ARGS
        if outcome is not None:
            touch = outcome.effect is Effect.OK and not 0 <= now - self._touched < 1.0
            if touch:
                self._touched = now
            outcome_args = [*outcome.args(touch), *(self.policy.args() if outcome.needs_policy else ())]
        args = [len(money_keys), len(margs), *margs, now, admission.hold.request_id, tokens, *_scope_args(scopes),
                *outcome_args, *(record or [0])]
        reply = _text(self._per_request(keys=keys, args=[_SETTLE_CALL, *args]))
        if reply[0] != 1:
            return False, [], 0
        return True, reply[2:], int(reply[1])
