"""The capacity queue: when every route of a model is full, a request waits its turn instead of an
instant 429 — up to its group's `queue_seconds` (0 keeps the 429), in a queue in Redis that every
relay process shares.

A queue belongs to the requests that compete for the same channels (a model and its candidate
channels: relay/redis_keys.py `queue_keys`, one hash tag, so each script touches one slot). While
anyone waits, only the queue's head may take a route; a request that finds a queue joins it at the
back of its share. The order is start-time fair queuing: each API key's next ticket gets a virtual
time one step past its last (or the queue's clock, whichever is later), the step being the number of
the account's keys waiting when the ticket joins — so one busy key cannot starve another key, and
an account whose keys wait together gets one account's share, not one per key (tags are fixed when a
ticket joins: a key that joins later than its account's busy key steps by the count then). Groups
with a higher `priority` are served first.

Nothing is held while a request waits: the admit script that serves the head takes its route,
limits and hold at once, and removes its ticket in the same step (relay/admission.py). A waiter
beats on every poll; a ticket whose relay died stops beating and is swept within seconds. The
serving rate (an average of the time between two served tickets) turns a position into a wait:
a request that could not be served within its limit is told, in `Retry-After`, how long the queue
ahead of it needs.

The plain path (no queue) costs nothing more on one Redis server: the admit script checks that the
queue is empty in the same round trip. Under Redis Cluster the queue has a tag of its own, so that
check is a call of its own, which a relay process makes at most once a head's poll interval while
it finds the queue empty (relay/admission.py), and the head pays one more to leave it. Only a request that waits makes more (join, a poll per ~50 ms, leave).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import gevent

from relay import redis_keys
from relay.health import ARG_READER_LUA

if TYPE_CHECKING:
    from relay.context import RequestContext
    from relay.keys import KeyView
    from relay.snapshot import ChannelView, GroupView

MAX_WAITING = 10_000  # tickets in one queue; more is an overflow at once
BEAT_SECONDS = 3.0  # a waiter silent this long is gone (it polls far more often)
HEAD_POLL_SECONDS = 0.05
TAIL_POLL_SECONDS = 0.2  # waiters far from the head poll less often
NEAR_HEAD = 4


class Queued(Exception):
    """Not this request's turn (or the routes are still full): wait. `rank` is its place, 0 the head;
    -1 means its ticket is not in the queue (swept), so it joins again."""

    def __init__(self, rank: int):
        super().__init__(f"queued at {rank}")
        self.rank = rank


class Overflow(Exception):
    """The request could not be served within its group's limit; `retry_after` comes from the queue."""

    def __init__(self, retry_after: int):
        super().__init__("capacity queue overflow")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class QueueSpot:
    """Where a request queues, and its ticket once it joined ('' before)."""

    keys: tuple[str, str, str, str]  # waiting (zset by fair order), beats (zset by deadline), state, rate
    ticket: str = ""


def spot_for(model: str, channels: tuple[ChannelView, ...]) -> QueueSpot:
    """Requests for the same model over the same channels share a queue."""
    name = model + "|" + ",".join(str(c.id) for c in sorted(channels, key=lambda c: c.id))
    return QueueSpot(redis_keys.queue_keys(hashlib.blake2b(name.encode(), digest_size=8).hexdigest()))


# Shared by the admit script and the queue's own. `q` is {wait, beat, state, rate} (keys). The state
# hash: `v` the queue's virtual clock; per ticket `i:<t>` "account key tag"; per key `c:<k>` its
# waiting tickets and `l:<k>` its last tag; per account `n:<a>` its keys waiting. The rate hash:
# `last` when a ticket was last served, `gap` the average seconds between two.
QUEUE_LUA = r"""
local Q_BAND = 1e9

local function q_keys()
  return {wait = nkey(), beat = nkey(), state = nkey(), rate = nkey()}
end

local function q_drop(q, ticket)
  redis.call('ZREM', q.wait, ticket)
  redis.call('ZREM', q.beat, ticket)
  local info = redis.call('HGET', q.state, 'i:' .. ticket)
  if not info then return nil end
  redis.call('HDEL', q.state, 'i:' .. ticket)
  local acct, key, tag = string.match(info, '^(%S+) (%S+) (%S+)$')
  if redis.call('HINCRBY', q.state, 'c:' .. key, -1) <= 0 then
    redis.call('HDEL', q.state, 'c:' .. key)
    if redis.call('HINCRBY', q.state, 'n:' .. acct, -1) <= 0 then redis.call('HDEL', q.state, 'n:' .. acct) end
  end
  return tonumber(tag)
end

-- Tickets whose waiter stopped beating leave; an empty queue starts its clock over.
local function q_sweep(q, now)
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', q.beat, '-inf', now, 'LIMIT', 0, 64)) do q_drop(q, t) end
  if redis.call('ZCARD', q.wait) == 0 then redis.call('DEL', q.state) return true end
  return false
end

local function q_gap(q)
  return tonumber(redis.call('HGET', q.rate, 'gap') or '0')
end

-- May this request take a route now? nil: yes; else its rank (-1: its ticket is gone, join again).
-- Only the head may while anyone waits; a newcomer only when nobody does.
local function q_gate(q, now, ticket, beat_until)
  if ticket == '' then
    -- the plain path: one ZCARD when nobody waits
    if redis.call('ZCARD', q.wait) == 0 or q_sweep(q, now) then return nil end
    return 0
  end
  q_sweep(q, now)
  local rank = redis.call('ZRANK', q.wait, ticket)
  if not rank then return -1 end
  redis.call('ZADD', q.beat, 'XX', beat_until, ticket)
  if rank > 0 then return rank end
  return nil
end

-- The head took its route: it leaves, the clock moves to its tag, the serving rate learns.
local function q_served(q, now, ticket)
  local tag = q_drop(q, ticket)
  if tag then
    local v = tonumber(redis.call('HGET', q.state, 'v') or '0')
    if tag > v then redis.call('HSET', q.state, 'v', tag) end
  end
  local last = tonumber(redis.call('HGET', q.rate, 'last') or '0')
  if last > 0 and now > last and now - last < 30 then  -- a queue idle for a while learns afresh
    local gap = q_gap(q)
    local seen = now - last
    if gap > 0 then seen = 0.7 * gap + 0.3 * seen end
    redis.call('HSET', q.rate, 'gap', seen)
  end
  redis.call('HSET', q.rate, 'last', now)
  redis.call('EXPIRE', q.rate, 3600)
  if redis.call('ZCARD', q.wait) == 0 then redis.call('DEL', q.state) end
end

-- Seconds until `ahead` tickets and this one are served at the learnt rate (at least 1).
local function q_retry(q, ahead)
  local gap = q_gap(q)
  if gap <= 0 then gap = 1 end
  return math.max(1, math.ceil((ahead + 1) * gap))
end

-- An optional queue, as the admit script takes it: ARGV 1 and the ticket and beat deadline, or 0.
local function q_read()
  if num() == 0 then return nil end
  local q = q_keys()
  q.ticket, q.beat_until = nxt(), num()
  return q
end
"""


# KEYS: the queue's four. ARGV: now, ticket, beat deadline, band (priority), account, key, limit (s).
# Returns {'in', rank, seconds the queue ahead needs} or {'full', retry after}.
_JOIN = ARG_READER_LUA + QUEUE_LUA + r"""
local q = q_keys()
local now, ticket, beat_until, band, acct, key, limit = num(), nxt(), num(), num(), nxt(), nxt(), num()
q_sweep(q, now)
local v = tonumber(redis.call('HGET', q.state, 'v') or '0')
local share = tonumber(redis.call('HGET', q.state, 'n:' .. acct) or '0')
if not redis.call('HGET', q.state, 'c:' .. key) then share = share + 1 end
local tag = math.max(v, tonumber(redis.call('HGET', q.state, 'l:' .. key) or '0')) + share
local score = (1000 - band) * Q_BAND + tag
-- Only the tickets that would be served before this one count against its limit.
local ahead = redis.call('ZCOUNT', q.wait, '-inf', score)
local gap = q_gap(q)
if redis.call('ZCARD', q.wait) >= """ + str(MAX_WAITING) + r""" or (gap > 0 and (ahead + 1) * gap > limit) then
  return {'full', q_retry(q, ahead)}
end
if redis.call('HINCRBY', q.state, 'c:' .. key, 1) == 1 then redis.call('HINCRBY', q.state, 'n:' .. acct, 1) end
redis.call('HSET', q.state, 'l:' .. key, tag, 'i:' .. ticket, acct .. ' ' .. key .. ' ' .. tag)
redis.call('ZADD', q.wait, score, ticket)
redis.call('ZADD', q.beat, beat_until, ticket)
local rank = redis.call('ZRANK', q.wait, ticket)
return {'in', rank, q_retry(q, rank)}
"""

# KEYS: the queue's four. ARGV: now, ticket. Returns the seconds the queue ahead of it needs.
_LEAVE = ARG_READER_LUA + QUEUE_LUA + r"""
local q = q_keys()
local now, ticket = num(), nxt()
local rank = redis.call('ZRANK', q.wait, ticket) or redis.call('ZCARD', q.wait)
q_drop(q, ticket)
q_sweep(q, now)
return q_retry(q, rank)
"""


def admit_args(spot: QueueSpot | None, now: float) -> tuple[list[str], list[Any]]:
    """The keys and arguments `q_read` takes."""
    if spot is None:
        return [], [0]
    return list(spot.keys), [1, spot.ticket, now + BEAT_SECONDS]


class CapacityQueue:
    """The process's side of the queue: join, wait (polling the admit for its turn), leave."""

    def __init__(self, register: Callable[[str], Callable[..., Any]], clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Any] = gevent.sleep):
        self._join = register(_JOIN)
        self._leave = register(_LEAVE)
        self.clock = clock
        self.sleep = sleep

    def wait(self, ctx: RequestContext, spot: QueueSpot, group: GroupView, key: KeyView, try_admit: Callable[[QueueSpot], Any]) -> Any:
        """Wait for a turn, then `try_admit(spot with ticket)` until it admits; raises `Overflow`
        when the group's limit passes first. `try_admit` raises `Queued` to go on waiting; anything
        else it raises leaves the queue and goes up."""
        started = time.monotonic()
        deadline = started + group.queue_seconds
        ticket = ctx.request_id
        rank = self._enter(ctx, spot, ticket, group, key)
        entry = ctx.trace[-1]
        mine = replace(spot, ticket=ticket)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sleep(min(HEAD_POLL_SECONDS if rank < NEAR_HEAD else TAIL_POLL_SECONDS, left))
                try:
                    admission = try_admit(mine)
                except Queued as queued:
                    rank = queued.rank
                    if rank < 0:  # swept while this process was stalled: back in at its fair place
                        rank = self._enter(ctx, spot, ticket, group, key, note=False)
                    continue
                waited = time.monotonic() - started
                ctx.queued_ms = int(waited * 1000)
                entry.update(result="served", waited_ms=ctx.queued_ms)
                return admission
        except BaseException:
            self._leave(keys=list(spot.keys), args=[self.clock(), ticket])
            raise
        retry_after = int(self._leave(keys=list(spot.keys), args=[self.clock(), ticket]))
        ctx.queued_ms = int((time.monotonic() - started) * 1000)
        entry.update(result="overflow", waited_ms=ctx.queued_ms, retry_after=retry_after)
        raise Overflow(retry_after)

    def _enter(self, ctx: RequestContext, spot: QueueSpot, ticket: str, group: GroupView, key: KeyView, note: bool = True) -> int:
        now = self.clock()
        reply = self._join(keys=list(spot.keys), args=[now, ticket, now + BEAT_SECONDS, group.priority, key.account_id, key.id,
                                                          group.queue_seconds])
        tag = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if tag == "full":
            ctx.note(step="queue", result="full", retry_after=int(reply[1]))
            raise Overflow(int(reply[1]))
        rank = int(reply[1])
        if note:
            ctx.note(step="queue", position=rank + 1, expected_s=int(reply[2]), limit_s=group.queue_seconds)
        return rank

