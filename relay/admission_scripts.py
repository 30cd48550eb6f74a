"""The Lua of admission (relay/admission.py): admit, failover and settle, as one script each on one
Redis server, and as a call per slot touched when the money is spread over buckets (Redis Cluster):
the money's, each other scope's, each channel's.

Python hands every script its keys as KEYS[] (relay/redis_keys.py) and its arguments in the order
the readers below take them; relay/admission.py's Gate builds both.
"""
from __future__ import annotations

from relay import generation, idempotency, quota
from relay.affinity import AFFINITY_LUA
from relay.capacity_queue import QUEUE_LUA
from relay.health import ARG_READER_LUA, HEALTH_LUA
from relay.limits import LIMITS_LUA
from relay.script_batch import batch_lua

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
-- `forced` (true or false) is the panic the caller judged, when `cs` is not all of the channels.
local function pick_route(cs, rs, now, forced)
  local ejected, n_ej = {}, 0
  for i, c in ipairs(cs) do
    if h_channel_ejected(c.hc, now) then ejected[i] = true n_ej = n_ej + 1 end
  end
  local panic = n_ej * 2 > #cs
  if forced ~= nil then panic = forced end
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


# Admit's two halves, which the combined admit (one Redis server) interleaves: the money half
# (idempotency claim, credit hold) and the route half (the caller's limits, the capacity queue, the
# route and its slot, the pin). ARGV: kpos, the request id, the hold's arguments, the claim's | now,
# the lease's end, the scopes, the plan, the pin, the queue. KEYS: the hold's (fixed: money_hold
# reads them by position), then the route half's in the order its readers take them, then the
# idempotency claim, last.
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

# Split, admit is the money call on the account's bucket, then a call for each other scope's tag
# and the capacity queue's (only those configured), then one call for each channel tried, in plan
# order, until one takes the request. The money call: the idempotency claim, the API key's limits,
# the hold, and the conversation's pin read; all of it undone (_ADMIT_UNDO_BODY) when a later call
# refuses. ARGV: kpos, the request id, the hold's and the claim's arguments, now, the lease's end,
# the key's scopes, whether a pin is read. KEYS: the hold's, the scopes', [the pin], [the claim].
_ADMIT_MONEY_BODY = r"""
kpos = num()
local rid, margs, idem = admit_money_args()
local now, lease = num(), num()
local scopes = {}
for i = 1, num() do scopes[i] = l_scope() end
local pin = nil
if num() == 1 then pin = nkey() end
local prior = idem_check(KEYS, idem)
if prior then return prior end
for _, s in ipairs(scopes) do
  local which, wait = l_check(s, now)
  if which then return {'limit', s.name, which, wait} end
end
local m = money_hold(KEYS, margs)
if m[1] ~= 1 then return {'money', m[1], m[2]} end
for _, s in ipairs(scopes) do l_take(s, rid, lease, now) end
if #idem > 0 then idem_mark(KEYS[#KEYS], idem[1], idem[2], rid) end
local pinned = ''
if pin then pinned = redis.call('GET', pin) or '' end
return {'ok', m[3], pinned}
"""

# One channel's routes (relay/admission.py's _plan_args and _plan_keys for that channel alone),
# under the channel's tag: the first that can serve takes the request. ARGV: the request id, now,
# the lease's end, the panic the relay judged (0/1), the plan. Returns {'ok', index, the channel's
# ejection end} or {'none', seconds to wait, the channel's ejection end, skips...}.
_CHANNEL_PICK_BODY = r"""
local rid, now, lease, forced = nxt(), num(), num(), num()
local cs = read_channels()
local rs = read_routes(cs)
local pick, panic, skips, wait = pick_route(cs, rs, now, forced == 1)
local ejected_until = math.ceil(h_num(cs[1].hc, 'u'))
if pick == 0 then return {'none', wait, ejected_until, unpack(skips)} end
take_route(cs[1], rs[pick], rid, lease, now)
return {'ok', pick, ejected_until, unpack(skips)}
"""

# A hold the money call made for a request a later call refused: released and gone (no settle
# will come), with the idempotency claim it marked and the API key's limits it took. KEYS: the hold,
# the holds index, the scopes the hold reserved in (as its record names them), the key's limit
# scopes', [the claim]. ARGV: the request id, how many hold scopes, whether a claim is given, the
# key's limit scopes.
_ADMIT_UNDO_BODY = r"""
local rid, n, claimed = nxt(), num(), num()
kpos = n + 2
for i = 1, num() do l_untake(l_scope(), rid) end
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
FAILOVER = _PRELUDE + r"""
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

# Settle's two halves, likewise: the money half (release the hold, charge, queue the usage event,
# keep the generation record), then, only when it settled now, the route half (leases given back,
# tokens counted, the outcome recorded in passive health). ARGV: kpos, the money settle's, the
# generation record | now, the request id, tokens, the scopes, the outcome, the health policy (only
# when the outcome needs it). KEYS: the money settle's (fixed), the scopes', the outcome's health,
# the generation record last.
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

# Split, settle's money call also gives back the API key's limits and counts its tokens, and writes the
# conversation's pin (the route that served, or was tried last). ARGV after the generation record:
# now, the request id, tokens, the key's scopes, the pin's TTL (0: none) and route key. KEYS: the
# money settle's, the scopes', [the pin], the generation record last.
_SETTLE_MONEY_TAIL = r"""
local now, rid, tokens = num(), nxt(), num()
for i = 1, num() do l_finish(l_scope(), rid, tokens) end
local pin_ttl = num()
if pin_ttl > 0 then redis.call('SET', nkey(), nxt(), 'EX', pin_ttl) end
"""

_SETTLE_BODY = "kpos = num()\n" + _SETTLE_MONEY + _SETTLE_ROUTE + "return {1, charged, rec[1], rec[2], rec[3]}\n"
_SETTLE_MONEY_BODY = "kpos = num()\n" + _SETTLE_MONEY + _SETTLE_MONEY_TAIL + "return {1, charged}\n"
# A channel's part of a settle, or of a failover (no tokens): its limits and its key's given back,
# the attempt's outcome recorded in their health.
_SETTLE_ROUTE_BODY = _SETTLE_ROUTE + "return {1, 0, rec[1], rec[2], rec[3]}\n"

# The limits of a user or a group, under the scope's own tag, and the capacity queue, under its own
# (split only, each only when configured).
_SCOPES_TAKE_BODY = r"""
local rid, now, lease = nxt(), num(), num()
local scopes = {}
for i = 1, num() do scopes[i] = l_scope() end
for _, s in ipairs(scopes) do
  local which, wait = l_check(s, now)
  if which then return {'limit', s.name, which, wait} end
end
for _, s in ipairs(scopes) do l_take(s, rid, lease, now) end
return {'ok'}
"""
_SCOPES_UNDO_BODY = r"""
local rid = nxt()
for i = 1, num() do l_untake(l_scope(), rid) end
return {'ok'}
"""
_SCOPES_FINISH_BODY = r"""
local rid, tokens = nxt(), num()
for i = 1, num() do l_finish(l_scope(), rid, tokens) end
return {'ok'}
"""
# While a queue waits only its head may take a route; the head leaves once it has taken one.
_QUEUE_GATE_BODY = r"""
local ticket, now, beat_until = nxt(), num(), num()
local q = q_keys()
local rank = q_gate(q, now, ticket, beat_until)
if rank then return {'queue', rank} end
return {'ok'}
"""
_QUEUE_SERVED_BODY = r"""
local ticket, now = nxt(), num()
q_served(q_keys(), now, ticket)
return {'ok'}
"""

# One server: admit and settle are two bodies of one script, so that the calls of concurrent
# requests share one batch (relay/script_batch.py); a call's first argument says which body it runs.
_MONEY_FUNCTIONS = idempotency.CLAIM_LUA + _function("money_hold", quota.HOLD_LUA) + _function("money_settle", quota.SETTLE_LUA) + _MONEY_DEFS
PER_REQUEST = batch_lua(_PRELUDE + _MONEY_FUNCTIONS + _ROUTE_DEFS, _ADMIT_BODY, _SETTLE_BODY)
ADMIT_CALL, SETTLE_CALL = 1, 2
# Split (Redis Cluster), each half is a script of its own: every call runs its script's definitions
# first, so a half that carries only its own costs Redis less per call.
# Split (Redis Cluster), one script of every call a request makes, so that the calls of concurrent
# requests for one master share one batch (one pipeline) whatever their kind.
SPLIT_CALLS = batch_lua(ARG_READER_LUA + _LISTS_LUA + HEALTH_LUA + LIMITS_LUA + _ROUTES_LUA + QUEUE_LUA + _MONEY_FUNCTIONS,
                        _ADMIT_MONEY_BODY, _ADMIT_UNDO_BODY, _SETTLE_MONEY_BODY, _CHANNEL_PICK_BODY, _SETTLE_ROUTE_BODY,
                        _SCOPES_TAKE_BODY, _SCOPES_UNDO_BODY, _SCOPES_FINISH_BODY, _QUEUE_GATE_BODY, _QUEUE_SERVED_BODY)
(ADMIT_MONEY_CALL, ADMIT_UNDO_CALL, SETTLE_MONEY_CALL, CHANNEL_PICK_CALL, CHANNEL_SETTLE_CALL, SCOPES_TAKE_CALL, SCOPES_UNDO_CALL,
 SCOPES_FINISH_CALL, QUEUE_GATE_CALL, QUEUE_SERVED_CALL) = range(1, 11)
