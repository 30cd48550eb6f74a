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
from typing import TYPE_CHECKING, Any, Callable, Iterable

from redis.exceptions import ConnectionError as RedisConnectionError

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

log = logging.getLogger(__name__)

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
"""

_LISTS_LUA = r"""
local function read_list()
  local out = {}
  for i = 1, num() do out[i] = nxt() end
  return out
end
"""

_PRELUDE = ARG_READER_LUA + _LISTS_LUA + HEALTH_LUA + LIMITS_LUA + _ROUTES_LUA + AFFINITY_LUA + QUEUE_LUA


def _function(name: str, body: str) -> str:
    return f"local function {name}(KEYS, ARGV)\n{body}\nend\n"


# Admit's two halves, which the combined admit (one Redis server) interleaves and a Redis Cluster runs
# as two calls: the money half on the account's bucket (idempotency claim, credit hold), the route
# half on the shared tag (the caller's limits, the capacity queue, the route and its slot, the pin).
# ARGV: [kpos,] the request id, the hold's arguments, the claim's | now, the lease's end, the scopes,
# the plan, the pin, the queue. KEYS: the hold's (fixed: money_hold reads them by position), then the
# route half's in the order its readers take them, then the idempotency claim, last.
_MONEY_DEFS = r"""
local function admit_money_args()
  local rid = nxt()
  return rid, read_list(), read_list()
end

local function idem_check(keys, idem)
  if #idem > 0 then return idem_prior(keys[#keys], idem[1]) end
  return nil
end
"""

_ROUTE_DEFS = r"""
local function admit_route_args()
  local r = {now = num(), lease = num(), scopes = {}}
  for i = 1, num() do r.scopes[i] = l_scope() end
  r.cs = read_channels()
  r.rs = read_routes(r.cs)
  r.aff, r.aff_ttl, r.tiers = a_read()
  r.q = q_read()
  return r
end

-- The refusal, or nil with the pick in r. While a queue waits only its head may take a route.
local function route_check(r)
  for _, s in ipairs(r.scopes) do
    local which, wait = l_check(s, r.now)
    if which then return {'limit', s.name, which, wait} end
  end
  if r.q then
    local rank = q_gate(r.q, r.now, r.q.ticket, r.q.beat_until)
    if rank then return {'queue', rank} end
  end
  local pick, panic, skips, wait, how = a_pick(r.cs, r.rs, r.now, r.aff, r.tiers)
  if pick == 0 then return {'route', wait, panic and 1 or 0, unpack(skips)} end
  r.pick, r.panic, r.skips, r.how = pick, panic, skips, how
  return nil
end

local function route_take(r, rid)
  for _, s in ipairs(r.scopes) do l_take(s, rid, r.lease, r.now) end
  take_route(r.cs[r.rs[r.pick].ci], r.rs[r.pick], rid, r.lease, r.now)
  a_pin(r.aff, r.rs[r.pick], r.aff_ttl)
  if r.q and r.q.ticket ~= '' then q_served(r.q, r.now, r.q.ticket) end
end

local function route_ok(r, reserved)
  return {'ok', reserved, r.pick, r.panic and 1 or 0, r.how, unpack(r.skips)}
end
"""

# An idempotency key seen before answers first, whatever the limits, routes or balance are now
# (relay/idempotency.py); a new one is marked in progress only when everything else passed.
_ADMIT_BODY = r"""
kpos = num()
local rid, margs, idem = admit_money_args()
local r = admit_route_args()
local prior = idem_check(KEYS, idem)
if prior then return prior end
local refused = route_check(r)
if refused then return refused end
local m = money_hold(KEYS, margs)
if m[1] ~= 1 then return {'money', m[1], m[2]} end
route_take(r, rid)
if #idem > 0 then idem_mark(KEYS[#KEYS], idem[1], idem[2], rid) end
return route_ok(r, m[3])
"""

# The money half alone: the claim is marked in progress with the hold, and both are undone
# (_ADMIT_UNDO_BODY) when the route half refuses.
_ADMIT_MONEY_BODY = r"""
kpos = num()
local rid, margs, idem = admit_money_args()
local prior = idem_check(KEYS, idem)
if prior then return prior end
local m = money_hold(KEYS, margs)
if m[1] ~= 1 then return {'money', m[1], m[2]} end
if #idem > 0 then idem_mark(KEYS[#KEYS], idem[1], idem[2], rid) end
return {'ok', m[3]}
"""

_ADMIT_ROUTE_BODY = r"""
local rid = nxt()
local r = admit_route_args()
local refused = route_check(r)
if refused then return refused end
route_take(r, rid)
return route_ok(r, 0)
"""

# A hold the money half made for a request the route half refused: released and gone (no settle
# will come), with the idempotency claim it marked. KEYS: the hold, the holds index, the scopes the
# hold reserved in (as its record names them), [the claim]. ARGV: the request id, how many scopes,
# whether a claim is given.
_ADMIT_UNDO_BODY = r"""
local rid, n, claimed = nxt(), num(), num()
local rec = redis.call('HMGET', KEYS[1], 'amt', 'acct', 'akey', 'w1', 'w2', 'w3')
if rec[1] then
  local named = {}
  for j = 2, 6 do
    if rec[j] then named[#named + 1] = rec[j] end
  end
  if #named ~= n then error('the hold of ' .. rid .. ' reserved in ' .. #named .. ' scopes, not ' .. n) end
  for i, name in ipairs(named) do
    if KEYS[i + 2] ~= name then error('the hold of ' .. rid .. ' names ' .. name) end
  end
  local amt = tonumber(rec[1])
  for i = 3, n + 2 do redis.call('HINCRBY', KEYS[i], 'held', 0 - amt) end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], rid)
end
if claimed == 1 and redis.call('HGET', KEYS[#KEYS], 'rid') == rid then redis.call('DEL', KEYS[#KEYS]) end
return 1
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

# Settle's two halves, likewise: the money half on the account's bucket (release the hold, charge,
# queue the usage event, keep the generation record), then, only when it settled now, the route
# half on the shared tag (leases given back, tokens counted, the outcome recorded in passive
# health). ARGV: [kpos,] the money settle's, the generation record | now, the request id, tokens, the
# scopes, the outcome, the health policy (only when the outcome needs it). KEYS: the money settle's
# (fixed), the scopes', the outcome's health, the generation record last.
_SETTLE_MONEY = r"""
local margs = read_list()
local charged = money_settle(KEYS, margs)
if charged < 0 then
  -- No record: Redis lost the hold (restarted without its data) while the request ran, or another
  -- settle took it. The answer was delivered: its event goes to ingestion marked unheld, which
  -- charges it once if SQL has no such request yet, as far as the balance has room.
  redis.call('XADD', KEYS[3], '*', 'e', margs[3], 'unheld', margs[2])
  return {0}
end
""" + generation.SETTLE_LUA

_SETTLE_ROUTE = r"""
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
"""

_SETTLE_BODY = "kpos = num()\n" + _SETTLE_MONEY + _SETTLE_ROUTE + "return {1, charged, rec[1], rec[2], rec[3]}\n"
_SETTLE_MONEY_BODY = "kpos = num()\n" + _SETTLE_MONEY + "return {1, charged}\n"
_SETTLE_ROUTE_BODY = _SETTLE_ROUTE + "return {1, 0, rec[1], rec[2], rec[3]}\n"

# One server: admit and settle are two bodies of one script, so that the calls of concurrent
# requests share one batch (relay/script_batch.py); a call's first argument says which body it runs.
_MONEY_FUNCTIONS = idempotency.CLAIM_LUA + _function("money_hold", quota.HOLD_LUA) + _function("money_settle", quota.SETTLE_LUA) + _MONEY_DEFS
_PER_REQUEST = batch_lua(_PRELUDE + _MONEY_FUNCTIONS + _ROUTE_DEFS, _ADMIT_BODY, _SETTLE_BODY)
_ADMIT_CALL, _SETTLE_CALL = 1, 2
# Split (Redis Cluster), each half is a script of its own: every call runs its script's definitions
# first, so a half that carries only its own costs Redis less per call.
_MONEY_HALVES = batch_lua(ARG_READER_LUA + _LISTS_LUA + _MONEY_FUNCTIONS, _ADMIT_MONEY_BODY, _ADMIT_UNDO_BODY, _SETTLE_MONEY_BODY)
_ADMIT_MONEY_CALL, _ADMIT_UNDO_CALL, _SETTLE_MONEY_CALL = 1, 2, 3

_ROUTE_HALVES = batch_lua(_PRELUDE + _ROUTE_DEFS, _ADMIT_ROUTE_BODY, _SETTLE_ROUTE_BODY)
_ADMIT_ROUTE_CALL, _SETTLE_ROUTE_CALL = 1, 2


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
        # (relay/script_batch.py); a failover is rare and goes alone. A batch's calls must share a
        # slot (a cluster refuses a command whose keys span slots): split, each money bucket has its
        # batches, and the route halves theirs.
        self._per_request = BatchedScript(register(_PER_REQUEST if not self.split else _ROUTE_HALVES), batch_size, batch_in_flight)
        money = register(_MONEY_HALVES)
        self._money = [BatchedScript(money, batch_size, batch_in_flight) for _ in range(redis_keys.MONEY_BUCKETS)] if self.split else []
        # Where a hold goes that the split admit made and could not undo (relay/billing.py's
        # `Charges.abandon`, set by the pipeline that owns both).
        self.strand: Callable[[str, int], None] | None = None
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
                                              args=[_ADMIT_CALL, len(money_keys), *money_args, *route_args]), routes)
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
        reserved = _answer(self._money_batch(hold.account_id)(
            keys=[*money_keys, *claim_keys], args=[_ADMIT_MONEY_CALL, len(money_keys), *money_args]), routes)[1]
        try:
            reply = _answer(self._per_request(keys=route_keys, args=[_ADMIT_ROUTE_CALL, hold.request_id, *route_args]), routes)
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
                    self.strand(hold.request_id, hold.account_id)
                raise RedisConnectionError(f"Redis failed between the halves of an admission: {error}") from error
            raise
        reply[1] = reserved
        return reply

    def _money_batch(self, account_id: int) -> BatchedScript:
        return self._money[redis_keys.money_bucket(account_id)]

    def _undo(self, hold: Hold, key_limit: int | None, claim_keys: list[str]) -> None:
        bucket = redis_keys.money_bucket(hold.account_id)
        scopes = [redis_keys.account_key(hold.account_id)]
        if key_limit is not None:
            scopes.append(redis_keys.api_key_key(hold.account_id, hold.key_id))
        scopes += [w for w, reserving in zip(hold.windows, hold.reserved, strict=True) if reserving]
        keys = [redis_keys.hold_key(bucket, hold.request_id), redis_keys.holds_key(bucket), *scopes, *claim_keys]
        self._money_batch(hold.account_id)(keys=keys, args=[_ADMIT_UNDO_CALL, hold.request_id, len(scopes), 1 if claim_keys else 0])

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
        gen_key = generation.record_key(hold.account_id, hold.request_id)
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
                                            args=[_SETTLE_CALL, len(money_keys), *money_args, *route_args]))
            if reply[0] != 1:
                return False, [], 0
            return True, reply[2:], int(reply[1])
        reply = _text(self._money_batch(hold.account_id)(
            keys=[*money_keys, gen_key], args=[_SETTLE_MONEY_CALL, len(money_keys), *money_args]))
        if reply[0] != 1:
            return False, [], 0
        charged = int(reply[1])
        if not route_keys:
            return True, [], charged
        try:
            record_reply = _text(self._per_request(keys=route_keys, args=[_SETTLE_ROUTE_CALL, *route_args]))
        except Exception:
            # Charged already, which is what must happen once; the leases lapse by themselves.
            log.exception("request %s settled; its leases, tokens and health outcome were not recorded", hold.request_id)
            return True, [], charged
        return True, record_reply[2:], charged
