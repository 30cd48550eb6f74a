"""Rate and capacity limits in Redis, shared by every relay process.

Limits apply to scopes: the caller's API key (`k:<id>`), user (`u:<id>`) and group (`g:<name>`),
and the upstream's channel (`c:<id>`) and channel key (`ck:<id>`). Each scope may limit requests
per minute, tokens per minute and concurrent requests.

- Per-minute limits are sliding-window counters (the previous minute's count weighted by how much
  of it is still inside the last 60 s, plus the current minute's): cheap, and a burst that straddles
  a minute boundary cannot double the limit the way fixed windows allow.
- Tokens are counted when a request settles (its real usage); a scope is refused while its window is
  full, so one large request may overshoot a tokens-per-minute limit once, never repeatedly.
- Concurrency is a sorted set of request ids scored by a lease expiry, so a relay that dies holding
  slots frees them when the lease runs out instead of leaking them forever.

The Lua here is folded into the relay's hold and settle scripts (relay/admission.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay import redis_keys
from relay.keys import KeyView
from relay.snapshot import GroupView, Limits


@dataclass(frozen=True, slots=True)
class Scope:
    name: str  # k:<id> | u:<id> | g:<name> | c:<id> | ck:<id>
    limits: Limits
    prefix: str = redis_keys.SHARED  # its keys' (relay/redis_keys.py): with the account, the channel, or a tag of its own

    def args(self) -> list[Any]:
        return [self.name, self.limits.rpm or 0, self.limits.tpm or 0, self.limits.concurrency or 0]

    def keys(self, now: float) -> list[str]:
        return limit_keys(self.name, self.limits, now, self.prefix)

    @property
    def with_money(self) -> bool:
        """An API key's limits: checked and taken in its account's money call (relay/admission.py)."""
        return self.name.startswith("k:")


def limit_keys(scope: str, limits: Limits, now: float, prefix: str = redis_keys.SHARED) -> list[str]:
    """The Redis keys a scope's limits use at `now`, in the order `l_keys` takes them: the previous
    and current minute's request counters, the same for tokens, the lease set — each only when that
    limit is set (an unset one touches nothing)."""
    minute = int(now // 60)
    keys = []
    if (limits.rpm or 0) > 0:
        keys += [redis_keys.limit_window_key(prefix, scope, "r", minute - 1), redis_keys.limit_window_key(prefix, scope, "r", minute)]
    if (limits.tpm or 0) > 0:
        keys += [redis_keys.limit_window_key(prefix, scope, "t", minute - 1), redis_keys.limit_window_key(prefix, scope, "t", minute)]
    if (limits.concurrency or 0) > 0:
        keys.append(redis_keys.lease_key(prefix, scope))
    return keys


# What the caller sees when a scope is over a limit.
SCOPE_LABELS = {"k": "API key", "u": "account", "g": "group"}
WHICH_LABELS = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrency": "concurrent requests"}


def caller_scopes(key: KeyView, group: GroupView) -> tuple[Scope, ...]:
    """The caller's limited scopes, most specific first (the first one over its limit is reported).
    The user's limits travel in the key's record."""
    scopes = [Scope(f"k:{key.id}", key.limits, redis_keys.account_limits_prefix(key.account_id))]
    if key.user_id is not None and key.user_limits.any:
        scopes.append(Scope(f"u:{key.user_id}", key.user_limits, redis_keys.user_limits_prefix(key.user_id)))
    scopes.append(Scope(f"g:{group.name}", group.limits, redis_keys.group_limits_prefix(group.name)))
    return tuple(s for s in scopes if s.limits.any)


# A concurrency slot (or a retry slot) given back outside a request's scripts: KEYS[1] the lease
# set, ARGV[1] the request (or retry) id.
GIVE_BACK_SLOT_LUA = "return redis.call('ZREM', KEYS[1], ARGV[1])"

# Every key comes in KEYS[] (relay/limits.py's `limit_keys`, read with `nkey()`): the minute a
# window belongs to is the `now` the caller passes, so Python names it as Lua would.
LIMITS_LUA = r"""
-- A scope's keys, in limit_keys' order, for the limits it has.
local function l_keys(s)
  if s.rpm > 0 then s.rp, s.rc = nkey(), nkey() end
  if s.tpm > 0 then s.tp, s.tc = nkey(), nkey() end
  if s.conc > 0 then s.cc = nkey() end
  return s
end

-- Seconds until one more unit fits under `limit` in the sliding window (0: it fits now).
local function l_wait(prev_key, curr_key, limit, now)
  local frac = now / 60 - math.floor(now / 60)
  local prev = tonumber(redis.call('GET', prev_key) or '0')
  local curr = tonumber(redis.call('GET', curr_key) or '0')
  local room = limit - 1
  if math.floor(prev * (1 - frac) + 0.5) + curr <= room then return 0 end
  local wait
  if curr > room then
    wait = 60 * (1 - frac) + 60 * math.max(0, 1 - (room + 0.5) / curr)
  else
    wait = 60 * math.max(0, 1 - (room - curr + 0.5) / prev - frac)
  end
  return math.max(1, math.ceil(wait))
end

local function l_add(key, n)
  redis.call('INCRBY', key, n)
  redis.call('EXPIRE', key, 150)
end

local function l_busy(key, limit, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key) >= limit
end

-- Which limit of a scope refuses one more request now (nil: none), and the seconds to wait.
local function l_check(s, now)
  if s.conc > 0 and l_busy(s.cc, s.conc, now) then return 'concurrency', 1 end
  if s.rpm > 0 then
    local w = l_wait(s.rp, s.rc, s.rpm, now)
    if w > 0 then return 'rpm', w end
  end
  if s.tpm > 0 then
    local w = l_wait(s.tp, s.tc, s.tpm, now)
    if w > 0 then return 'tpm', w end
  end
  return nil, 0
end

local function l_take(s, rid, lease_until, now)
  if s.rpm > 0 then l_add(s.rc, 1) end
  if s.conc > 0 then
    redis.call('ZADD', s.cc, lease_until, rid)
    redis.call('EXPIRE', s.cc, math.ceil(lease_until - now) + 60)
  end
end

-- At the end of a request (or an attempt): give the slot back, count the tokens.
local function l_finish(s, rid, tokens)
  if s.conc > 0 then redis.call('ZREM', s.cc, rid) end
  if s.tpm > 0 and tokens > 0 then l_add(s.tc, tokens) end
end

local function l_scope()
  return l_keys({name = nxt(), rpm = num(), tpm = num(), conc = num()})
end

-- A take given back: the request never ran (a later part of its admission refused it).
local function l_untake(s, rid)
  if s.conc > 0 then redis.call('ZREM', s.cc, rid) end
  if s.rpm > 0 and tonumber(redis.call('GET', s.rc) or '0') > 0 then redis.call('DECR', s.rc) end
end
"""
