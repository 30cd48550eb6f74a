"""Passive channel health: what an upstream failure does to a channel and its key, and the shared
state in Redis that every relay process reads and writes.

`effect_of` is the one pure function that decides what an `ErrorKind` does. The Redis side is Lua
(`HEALTH_LUA`) so the relay can fold it into the scripts it already runs per request (hold and
settle, relay/admission.py); `Health` runs the same Lua on its own for the console and for tests,
with an injectable clock.

Per key and per channel hashes (names in relay/redis_keys.py) hold: `f` consecutive failures, `e` the
ejection multiplier, `u` ejected until, `d` the decay anchor, and for keys `cool` (429 cool-down).
A dead mark per key marks it proven dead until the control plane disables it in SQL.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from relay import redis_keys
from relay.errors import ErrorKind, UpstreamError

if TYPE_CHECKING:
    from redis import Redis

REPORTS_STREAM = redis_keys.HEALTH_REPORTS  # dead keys, for workers/health.py to disable in SQL
REPORTS_GROUP = "apply"


class Effect(str, enum.Enum):
    OK = "ok"  # the attempt succeeded: consecutive failures start again from zero
    CLIENT = "client"  # the caller's request is at fault: never retried, never held against anyone
    FAILURE = "failure"  # the channel misbehaved: retry elsewhere, counts towards ejection
    COOLDOWN = "cooldown"  # rate limited: retry elsewhere, the key rests for Retry-After
    DEAD_KEY = "dead_key"  # the operator's key is invalid or out of money: disable it at once
    MISROUTE = "misroute"  # the upstream does not know this model: retry elsewhere, no ejection


_EFFECTS: dict[ErrorKind, Effect] = {
    ErrorKind.AUTH: Effect.DEAD_KEY,
    ErrorKind.QUOTA: Effect.DEAD_KEY,
    ErrorKind.RATE_LIMIT: Effect.COOLDOWN,
    ErrorKind.OVERLOADED: Effect.FAILURE,
    ErrorKind.BAD_REQUEST: Effect.CLIENT,
    ErrorKind.CONTENT_POLICY: Effect.CLIENT,
    ErrorKind.NOT_FOUND: Effect.MISROUTE,
    ErrorKind.PERMISSION: Effect.MISROUTE,  # a 403 for one model must not disable a key that serves others
    ErrorKind.TRANSIENT: Effect.FAILURE,
    ErrorKind.TIMEOUT: Effect.FAILURE,
    ErrorKind.CONNECT: Effect.FAILURE,
    ErrorKind.INVALID_RESPONSE: Effect.FAILURE,
}


def effect_of(kind: ErrorKind | None) -> Effect:
    """What an attempt's result does to its channel and key (None: it succeeded)."""
    if kind is None:
        return Effect.OK
    return _EFFECTS[kind]


def retryable(effect: Effect) -> bool:
    """Whether another channel/key may be tried (only ever before the first byte reached the caller)."""
    return effect in (Effect.FAILURE, Effect.COOLDOWN, Effect.DEAD_KEY, Effect.MISROUTE)


# What the Lua records for each effect; CLIENT and MISROUTE leave health alone.
_RECORDED = {Effect.OK: "ok", Effect.FAILURE: "failure", Effect.COOLDOWN: "cooldown", Effect.DEAD_KEY: "dead"}


@dataclass(frozen=True)
class HealthPolicy:
    """Envoy-style outlier detection settings (defaults: 5 failures, 30 s base, 300 s cap)."""

    failures: int = 5  # consecutive failures that eject
    base_seconds: float = 30.0  # ejection time = base × ejections, decaying by one per healthy base
    max_seconds: float = 300.0
    cooldown_seconds: float = 5.0  # a 429 that names no Retry-After
    max_cooldown_seconds: float = 600.0  # a Retry-After longer than this is not believed
    network_window_seconds: float = 10.0  # "everything failing at once" looks back this far
    dead_mark_seconds: int = 900  # relays skip a dead key this long; SQL disables it within seconds

    def args(self) -> list[Any]:
        return [self.failures, self.base_seconds, self.max_seconds, self.cooldown_seconds,
                self.max_cooldown_seconds, self.network_window_seconds, self.dead_mark_seconds]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result as health sees it."""

    effect: Effect
    channel_id: int
    key_id: int
    key_since: float = 0.0
    kind: str = ""
    message: str = ""
    retry_after: float | None = None
    network: bool = False  # no HTTP answer at all (connect error, timeout, reset)

    def args(self, touch: bool = True, shared: bool = True) -> list[Any]:
        """What `h_outcome` reads. A success reads only whether to write the last-success time:
        `touch` False leaves it (a relay writes it at most once a second; the network detector
        looks back `network_window_seconds`). Not `shared`: the outcome is recorded under its
        channel's tag alone, and the process's NetworkWatch has judged the network already."""
        recorded = _RECORDED.get(self.effect, "none")
        if recorded == "ok":
            return [recorded, 1 if touch and shared else 0]
        if recorded == "none":
            return [recorded]
        return [recorded, self.channel_id, self.key_id, self.key_since, -1 if self.retry_after is None else self.retry_after,
                1 if self.network and shared else 0, self.kind, self.message[:300]]

    @property
    def needs_policy(self) -> bool:
        """Whether recording this outcome reads the HealthPolicy (a success or nothing does not)."""
        return self.effect in _RECORDED and self.effect is not Effect.OK

    def keys(self, shared: bool = True) -> list[str]:
        """What recording this outcome may touch, in the order `h_outcome` takes them (none when
        nothing is recorded). Not `shared`: only the channel's and its key's, all under the
        channel's tag; the relay reports a dead key itself (relay/admission.py)."""
        if self.effect not in _RECORDED:
            return []
        hk, hc = redis_keys.key_health_key(self.channel_id, self.key_id), redis_keys.channel_health_key(self.channel_id)
        if self.effect is Effect.OK:
            return [hk, hc, redis_keys.HEALTH_LAST_OK] if shared else [hk, hc]
        dead = redis_keys.key_dead_key(self.channel_id, self.key_id)
        if not shared:
            return [hk, hc, dead]
        return [hk, hc, dead, redis_keys.HEALTH_LAST_OK, redis_keys.HEALTH_NETWORK, redis_keys.HEALTH_REPORTS]

    def report(self, now: float) -> dict[str, Any]:
        """A dead key's entry in the reports stream workers/health.py reads."""
        return {"channel": self.channel_id, "key": self.key_id, "kind": self.kind, "message": self.message[:300], "at": now}


NO_OUTCOME_ARGS = ["none"]


def report_dead(redis: Redis[bytes], outcome: Outcome, now: float) -> None:
    """A dead key's report, for workers/health.py to disable it in SQL, when the health script could
    not write it itself (under its channel's tag the stream is in another slot)."""
    redis.xadd(REPORTS_STREAM, outcome.report(now), maxlen=10_000, approximate=True)


class NetworkWatch:
    """This process's own network, judged where it is seen: attempts that got no answer at all from
    two or more channels within the window, with nothing answering since the window began, are this
    relay's network failing, not the channels', and are not held against them. (On one Redis server
    the relays share this watch in Redis, inside the health script; under Redis Cluster a channel's
    health is under the channel's tag, so each process keeps its own, which also keeps one relay's
    broken network from ejecting channels for every relay.)"""

    def __init__(self, window_seconds: float):
        self.window = window_seconds
        self.last_ok = 0.0
        self.silent: dict[int, float] = {}  # channel → when it last gave no answer

    def answered(self, now: float) -> None:
        self.last_ok = now

    def counts(self, channel_id: int, now: float) -> bool:
        """Whether a failure with no answer from `channel_id` counts against the channel."""
        self.silent[channel_id] = now
        for cid, when in list(self.silent.items()):
            if when < now - self.window:
                del self.silent[cid]
        return not (self.last_ok < now - self.window and len(self.silent) >= 2)


def outcome_of(channel_id: int, key_id: int, key_since: float, error: UpstreamError | None) -> Outcome:
    if error is None:
        return Outcome(Effect.OK, channel_id, key_id, key_since)
    return Outcome(effect_of(error.kind), channel_id, key_id, key_since, error.kind.value, error.message,
                   error.retry_after, error.status == 0)


# Lua shared by every script that touches health. Expects the `nxt()`/`num()`/`nkey()` readers;
# every key comes in KEYS[] (`Outcome.keys`, and the plan's in relay/admission.py).
HEALTH_LUA = r"""
local function h_num(h, field)
  return tonumber(redis.call('HGET', h, field) or '0')
end

local function h_policy()
  return {failures = num(), base = num(), max = num(), cooldown = num(), max_cooldown = num(),
          net_window = num(), dead_ttl = num()}
end

-- Each full base interval spent un-ejected takes one off the ejection multiplier.
local function h_decay(h, now, base)
  local e = h_num(h, 'e')
  if e == 0 then return 0 end
  local u = h_num(h, 'u')
  if u > now then return e end
  local d = math.max(h_num(h, 'd'), u)
  local steps = math.floor((now - d) / base)
  if steps > 0 then
    e = math.max(0, e - steps)
    redis.call('HSET', h, 'e', e, 'd', d + steps * base)
  end
  return e
end

-- One failure. Failures while ejected are not counted (in-flight requests finishing late).
local function h_fail(h, now, P)
  if h_num(h, 'u') > now then return 0 end
  local f = redis.call('HINCRBY', h, 'f', 1)
  redis.call('EXPIRE', h, 86400)
  if f < P.failures then return 0 end
  local e = math.min(h_decay(h, now, P.base) + 1, math.ceil(P.max / P.base))
  local untill = now + math.min(P.base * e, P.max)
  redis.call('HSET', h, 'f', 0, 'e', e, 'u', untill, 'd', untill)
  return untill
end

local function h_ok(h)
  local f = redis.call('HGET', h, 'f')
  if f and f ~= '0' then redis.call('HSET', h, 'f', 0) end
end

-- Outcome.args and Outcome.keys: a success names its two health hashes and the last-success time;
-- nothing recorded names nothing.
local function h_outcome()
  local effect = nxt()
  if effect == 'ok' then return {effect = effect, touch = num(), hk = nkey(), hc = nkey(), last_ok = nkey()} end
  if effect == 'none' then return {effect = effect} end
  local o = {effect = effect, cid = nxt(), kid = nxt(), since = num(), retry_after = num(), network = num(),
             kind = nxt(), message = nxt()}
  o.hk, o.hc, o.dead, o.last_ok, o.net, o.reports = nkey(), nkey(), nkey(), nkey(), nkey(), nkey()
  return o
end

-- Returns {what happened, key ejected until, channel ejected until}.
local function h_record(P, now, o)
  local hk, hc = o.hk, o.hc
  if o.effect == 'ok' then
    h_ok(hk)
    h_ok(hc)
    if o.touch == 1 then redis.call('SET', o.last_ok, now) end
    return {'ok', 0, 0}
  elseif o.effect == 'failure' then
    if o.network == 1 then
      -- No answer from anyone and nothing succeeded lately: our own network, not the channels.
      redis.call('ZADD', o.net, now, o.cid)
      redis.call('ZREMRANGEBYSCORE', o.net, '-inf', now - P.net_window)
      redis.call('EXPIRE', o.net, 3600)
      local last_ok = tonumber(redis.call('GET', o.last_ok) or '0')
      if last_ok < now - P.net_window and redis.call('ZCARD', o.net) >= 2 then
        return {'not_counted', 0, 0}
      end
    end
    return {'failure', math.ceil(h_fail(hk, now, P)), math.ceil(h_fail(hc, now, P))}
  elseif o.effect == 'cooldown' then
    local secs = o.retry_after
    if secs < 0 then secs = P.cooldown end
    secs = math.min(math.max(secs, 1), P.max_cooldown)
    local untill = now + secs
    if untill > h_num(hk, 'cool') then
      redis.call('HSET', hk, 'cool', untill)
      redis.call('EXPIRE', hk, 86400)
    end
    return {'cooldown', math.ceil(untill), 0}
  elseif o.effect == 'dead' then
    local mark = tonumber(redis.call('GET', o.dead) or '-1')
    if mark >= o.since then return {'dead', 0, 0} end
    redis.call('SET', o.dead, now, 'EX', P.dead_ttl)
    -- Without the stream (a channel's tag alone) the relay reports it: {'dead', 1} says to.
    if o.reports then
      redis.call('XADD', o.reports, 'MAXLEN', '~', 10000, '*', 'channel', o.cid, 'key', o.kid,
                 'kind', o.kind, 'message', o.message, 'at', now)
    end
    return {'dead', 1, 0}
  end
  return {'none', 0, 0}
end

local function h_channel_ejected(hc, now)
  return h_num(hc, 'u') > now
end

-- Why a key cannot take a request now (nil: it can), and until when if that is known.
local function h_key_unusable(hk, dead, since, now, panic)
  local mark = redis.call('GET', dead)
  if mark and tonumber(mark) >= since then return 'key_dead', 0 end
  local v = redis.call('HMGET', hk, 'u', 'cool')
  local cool = tonumber(v[2] or '0')
  if cool > now then return 'key_cooling', cool end
  if not panic and tonumber(v[1] or '0') > now then return 'key_ejected', 0 end
  return nil, 0
end
"""

# Scripts read their arguments in order: Python appends values, Lua takes them with nxt()/num().
ARG_READER_LUA = r"""
-- A and K hold the call's arguments and KEYS: a batch (relay/script_batch.py) sets them, and the positions,
-- for each call it runs.
local A, K, pos, kpos = ARGV, KEYS, 0, 0
local function nxt() pos = pos + 1 return A[pos] end
local function num() return tonumber(nxt()) end
-- Keys likewise, from K[kpos + 1] on: a script whose first keys are fixed sets kpos past them.
local function nkey() kpos = kpos + 1 return K[kpos] end
"""

_RECORD = ARG_READER_LUA + HEALTH_LUA + r"""
local now = num()
local P = h_policy()
return h_record(P, now, h_outcome())
"""


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """The passive-health state of one key or channel, as stored."""

    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    cooling_until: float = 0.0
    dead_since: float | None = None

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def cooling(self, now: float) -> bool:
        return self.cooling_until > now


class Health:
    """Records outcomes and reads state outside the request path (console, tests, probes)."""

    def __init__(self, redis: Redis[bytes], policy: HealthPolicy | None = None, clock: Callable[[], float] = time.time):
        self.redis = redis
        self.policy = policy or HealthPolicy()
        self.clock = clock
        self._record = redis.register_script(_RECORD)

    def record(self, outcome: Outcome) -> list[Any]:
        """Tagged (Redis Cluster), under the channel's tag alone, as the relays record it: a dead
        key's report is written after, and the network is not judged (no relay's view)."""
        shared = not redis_keys.SPREAD
        now = self.clock()
        reply = self._record(keys=outcome.keys(shared), args=[now, *self.policy.args(), *outcome.args(shared=shared)])
        record = [v.decode() if isinstance(v, bytes) else v for v in reply]
        if not shared and record[0] == "dead" and record[1] == 1:
            report_dead(self.redis, outcome, now)
        return record

    def _read(self, name: str, dead: str | None = None) -> TargetHealth:
        f, e, u, cool = self.redis.hmget(name, "f", "e", "u", "cool")
        mark = self.redis.get(dead) if dead else None
        return TargetHealth(int(f or 0), int(e or 0), float(u or 0), float(cool or 0), float(mark) if mark else None)

    def key(self, channel_id: int, key_id: int) -> TargetHealth:
        return self._read(redis_keys.key_health_key(channel_id, key_id), redis_keys.key_dead_key(channel_id, key_id))

    def channel(self, channel_id: int) -> TargetHealth:
        return self._read(redis_keys.channel_health_key(channel_id))

    def forget_key(self, channel_id: int, key_id: int) -> None:
        """Drop what the relays know about a key (an operator or a probe has just re-enabled it)."""
        self.redis.delete(redis_keys.key_health_key(channel_id, key_id), redis_keys.key_dead_key(channel_id, key_id))

    def forget_channel(self, channel_id: int) -> None:
        self.redis.delete(redis_keys.channel_health_key(channel_id))
