"""The retry budget shared by every relay process, through Redis: retries in flight across the
deployment ≤ max(minimum, percent% of the requests in flight across it), as Envoy's budget is per
process (relay/routing.py `RetryBudget`, which this extends and falls back to).

It costs nothing on the plain path: only a retry beyond a request's first failover asks Redis (one
round trip to take a slot, one to give it back). Taking a slot also tells Redis how many requests
this process has in flight; processes that have not said so for `STALE_SECONDS` stop counting.
A slot carries a lease, so a process that dies mid-retry cannot hold it for longer than that.
Both keys share a hash tag (relay/redis_keys.py): each script touches one slot of a Cluster.
When Redis cannot answer, the process's own budget decides.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from typing import Any, Callable

from redis.exceptions import RedisError

from relay import redis_keys
from relay.limits import GIVE_BACK_SLOT_LUA
from relay.routing import RetryBudget

log = logging.getLogger(__name__)

STALE_SECONDS = 10.0  # a process's count of requests in flight is forgotten after this
LEASE_SECONDS = 120.0  # the longest a retry slot is held when nobody gives it back

# KEYS: in-flight hash, active retries zset. ARGV: now, process, its requests in flight, percent, minimum, token, lease, stale.
_TAKE = r"""
local now, who, mine = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local percent, minimum, token = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local lease, stale = tonumber(ARGV[7]), tonumber(ARGV[8])
redis.call('HSET', KEYS[1], who, mine .. ':' .. now)
local requests, all = 0, redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, at = string.match(all[i + 1], '^(%d+):([%d.e+-]+)$')
  if n and tonumber(at) >= now - stale then requests = requests + tonumber(n) else redis.call('HDEL', KEYS[1], all[i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local active = redis.call('ZCARD', KEYS[2])
redis.call('EXPIRE', KEYS[1], math.ceil(stale * 6))
if active >= math.max(minimum, requests * percent / 100) then return {0, active, requests} end
redis.call('ZADD', KEYS[2], now + lease, token)
redis.call('EXPIRE', KEYS[2], math.ceil(lease * 2))
return {1, active + 1, requests}
"""

_GIVE_BACK = GIVE_BACK_SLOT_LUA


def process_name() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}"


class SharedRetryBudget(RetryBudget):
    def __init__(self, register: Callable[[str], Callable[..., Any]], percent: float = 20.0, minimum: int = 3,
                 clock: Callable[[], float] = time.time, name: str | None = None):
        super().__init__(percent, minimum)
        self._take = register(_TAKE)
        self._give_back = register(_GIVE_BACK)
        self.clock = clock
        self.name = name or process_name()
        self._tokens = itertools.count(1)

    def try_retry(self) -> str | None:
        token = f"{self.name}:{next(self._tokens)}"
        try:
            reply = self._take(keys=[redis_keys.RETRY_INFLIGHT, redis_keys.RETRY_ACTIVE],
                               args=[self.clock(), self.name, self.requests, self.percent, self.minimum, token, LEASE_SECONDS, STALE_SECONDS])
        except (RedisError, OSError):
            log.warning("the shared retry budget is unreachable; this process's own budget decides")
            return super().try_retry()
        if int(reply[0]) != 1:
            return None
        self.retries += 1
        return token

    def end_retry(self, ticket: str | None = None) -> None:
        super().end_retry(ticket)
        if ticket is not None and ticket != LOCAL:
            try:
                self._give_back(keys=[redis_keys.RETRY_ACTIVE], args=[ticket])
            except (RedisError, OSError):
                pass  # the slot's lease lapses on its own


LOCAL = "local"
