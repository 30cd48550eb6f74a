"""Credit holds and settlement in Redis, each one atomic Lua script (one round trip).

Redis keeps the live view of money: per account `bal` (the balance with every settled charge
applied) and `held` (the sum of open holds); per API key `spent` and `held` for its credit limit.
SQL keeps the durable ledger; the usage stream carries each settled charge from here to SQL.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relay.redis_keys import HOLDS_INDEXES, holds_key, is_day_window, money_bucket, usage_stream
from relay.redis_keys import account_key as account_key
from relay.redis_keys import api_key_key as api_key_key
from relay.redis_keys import day_of as day_of
from relay.redis_keys import hold_key as hold_key
from relay.redis_keys import key_day_key as key_day_key
from relay.redis_keys import key_month_key as key_month_key
from relay.redis_keys import member_month_key as member_month_key
from relay.redis_keys import month_of as month_of

if TYPE_CHECKING:
    from redis import Redis

# Spend windows outlive their period by a margin so late settles and the console still find them;
# day windows are kept 100 days for the legacy billing usage endpoint (relay/customer_api.py).
DAY_TTL_SECONDS = 102 * 86_400
MONTH_TTL_SECONDS = 40 * 86_400
# A hold the sweeper released stays a week as an empty record: long enough for any relay's settle
# journal to be replayed (every few seconds while it lives, at the next relay's start otherwise).
LAPSED_HOLD_SECONDS = 7 * 86_400


@dataclass(frozen=True, slots=True)
class Budgets:
    """A key's spend windows (µ$, None: no limit); `allowance` is its user's in an organisation."""

    daily: int | None = None
    monthly: int | None = None
    allowance: int | None = None

    @property
    def limits(self) -> tuple[int | None, int | None, int | None]:
        return self.daily, self.monthly, self.allowance


NO_BUDGETS = Budgets()
WINDOW_REFUSALS = {-2: "key_daily_budget", -3: "key_monthly_budget", -4: "member_allowance"}


_HOLD = """
-- ARGV[1] the amount wanted; ARGV[10] the least acceptable (-1: exactly ARGV[1]). A flexible hold
-- reserves as much of the wanted amount as every scope has room for, down to the least.
local want = tonumber(ARGV[1])
local least = tonumber(ARGV[10] or '-1')
if least < 0 or least > want then least = want end
local a = redis.call('HMGET', KEYS[1], 'bal', 'held')
local bal, held = tonumber(a[1] or '0'), tonumber(a[2] or '0')
local room = bal - held
if room < least or (want == 0 and room < 0) then
  return {0, room}
end
local limit = tonumber(ARGV[2])
if limit >= 0 then
  local k = redis.call('HMGET', KEYS[2], 'spent', 'held')
  local kroom = limit - tonumber(k[1] or '0') - tonumber(k[2] or '0')
  if kroom < least then
    return {-1, kroom}
  end
  if kroom < room then room = kroom end
end
-- >>> spend windows -- check ------------------------------------------------------------------
-- KEYS[5] key/day, KEYS[6] key/month, KEYS[7] member/month: hashes of 'spent' and 'held'.
-- ARGV[5..7] their limits in µ$ (-1: no limit, nothing reserved); ARGV[8] day TTL, ARGV[9] month TTL.
for i = 0, 2 do
  local wlimit = tonumber(ARGV[5 + i])
  if wlimit >= 0 then
    local w = redis.call('HMGET', KEYS[5 + i], 'spent', 'held')
    local wroom = wlimit - tonumber(w[1] or '0') - tonumber(w[2] or '0')
    if wroom < least then
      return {-2 - i, wroom}
    end
    if wroom < room then room = wroom end
  end
end
-- <<< spend windows -- check ------------------------------------------------------------------
local amt = want
if room < amt then amt = room end
redis.call('HINCRBY', KEYS[1], 'held', amt)
-- The hold record names every scope it reserved in (the settle and the sweeper release exactly
-- those), and carries the limits so the settle can keep every scope at or above zero. An API key
-- without a credit limit has nothing to reserve against: its `held` is not kept.
local record = {'amt', amt, 'acct', KEYS[1], 'klim', limit}
if limit >= 0 then
  redis.call('HINCRBY', KEYS[2], 'held', amt)
  record[7], record[8] = 'akey', KEYS[2]
end
-- >>> spend windows -- reserve ----------------------------------------------------------------
for i = 0, 2 do
  if tonumber(ARGV[5 + i]) >= 0 then
    redis.call('HINCRBY', KEYS[5 + i], 'held', amt)
    redis.call('EXPIRE', KEYS[5 + i], (i == 0) and ARGV[8] or ARGV[9])
    local n = #record
    record[n + 1], record[n + 2], record[n + 3], record[n + 4] = 'w' .. (i + 1), KEYS[5 + i], 'wl' .. (i + 1), ARGV[5 + i]
  end
end
-- <<< spend windows -- reserve ----------------------------------------------------------------
redis.call('HSET', KEYS[3], unpack(record))
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
return {1, bal - held - amt, amt}
"""

# Settle is idempotent: the hold record is the token that lets a request be charged once. Returns -1
# when it was already settled, else the amount charged: the cost, except that a cost over the hold
# (an input larger than its estimate) is cut to what leaves every scope at zero, never below.
_SETTLE = """
local rec = redis.call('HMGET', KEYS[1], 'amt', 'klim', 'wl1', 'wl2', 'wl3', 'akey')
if not rec[1] then return -1 end
local amt = tonumber(rec[1])
local cost = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local aheld = redis.call('HINCRBY', KEYS[4], 'held', 0 - amt)
-- The API key's `held` was reserved when the record names the key (always, in records written
-- before keys without a credit limit stopped reserving).
local kheld = 0
if rec[6] then kheld = redis.call('HINCRBY', KEYS[5], 'held', 0 - amt) end
for i = 0, 2 do
  if ARGV[4 + i] == '1' then
    redis.call('HINCRBY', KEYS[6 + i], 'held', 0 - amt)
  end
end
if cost > amt then
  local room = tonumber(redis.call('HGET', KEYS[4], 'bal') or '0') - aheld
  local klim = tonumber(rec[2] or '-1')
  if klim >= 0 then
    local kroom = klim - tonumber(redis.call('HGET', KEYS[5], 'spent') or '0') - kheld
    if kroom < room then room = kroom end
  end
  for i = 0, 2 do
    local wl = rec[3 + i]
    if wl then
      local w = redis.call('HMGET', KEYS[6 + i], 'spent', 'held')
      local wroom = tonumber(wl) - tonumber(w[1] or '0') - tonumber(w[2] or '0')
      if wroom < room then room = wroom end
    end
  end
  if room < amt then room = amt end
  if room < cost then cost = room end
end
if cost ~= 0 then
  redis.call('HINCRBY', KEYS[4], 'bal', -cost)
  redis.call('HINCRBY', KEYS[5], 'spent', cost)
end
-- >>> spend windows: KEYS[6..8] as in the hold. Every window counts what is spent (so a budget set
-- later starts from the truth); ARGV[4..6] '1' where the hold also reserved. A window is given its
-- lifetime when this spend created it: every other writer (a hold, the seeding from SQL) sets it.
if cost ~= 0 then
  for i = 0, 2 do
    if redis.call('HINCRBY', KEYS[6 + i], 'spent', cost) == cost then
      redis.call('EXPIRE', KEYS[6 + i], (i == 0) and ARGV[7] or ARGV[8])
    end
  end
end
-- <<< spend windows
if cost ~= tonumber(ARGV[2]) then
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[3], 'charged', cost)
else
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[3])
end
return cost
"""

# KEYS: the hold, the holds index, then the scopes the hold record names (account, API key, the
# windows it reserved in), read by the caller first so that every key the script touches is given.
# The record's names never change; a hold settled in between has no record left and is only unlisted.
# ARGV: the request id, how long the emptied record is kept (LAPSED_HOLD_SECONDS).
_RELEASE_EXPIRED = """
local rec = redis.call('HMGET', KEYS[1], 'amt', 'acct', 'akey', 'w1', 'w2', 'w3')
if not rec[1] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
local named = {}
for i = 2, 6 do
  if rec[i] then named[#named + 1] = rec[i] end
end
if #named ~= #KEYS - 2 then return 0 end
for i, name in ipairs(named) do
  if KEYS[i + 2] ~= name then return 0 end
end
local amt = tonumber(rec[1])
for i = 3, #KEYS do redis.call('HINCRBY', KEYS[i], 'held', 0 - amt) end
-- The record stays, holding nothing, for a settle that comes after all (a relay that outlived its
-- hold, or its journal replayed): charged as far as the balance has room then, never below zero.
redis.call('HSET', KEYS[1], 'amt', 0)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
-- 1, not the amount: a free request's hold of 0 is released too and must count as released.
return 1
"""

# Applies a ledger change made in SQL (top-up, refund, adjustment) to the live balance. When the
# account is not in Redis yet, the caller's SQL balance (which already includes the change) seeds it.
_CREDIT = """
if redis.call('HEXISTS', KEYS[1], 'bal') == 1 then
  return redis.call('HINCRBY', KEYS[1], 'bal', ARGV[1])
end
redis.call('HSET', KEYS[1], 'bal', ARGV[2])
return tonumber(ARGV[2])
"""


_ADD_SPENT = """
if redis.call('HEXISTS', KEYS[1], 'spent') == 1 then
  return redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
end
return 0
"""


class HoldRefused(Exception):
    def __init__(self, reason: str, available: int):
        super().__init__(reason)
        self.reason = reason  # "balance" | "key_limit" | one of WINDOW_REFUSALS' values
        self.available = available


@dataclass(frozen=True, slots=True)
class Hold:
    request_id: str
    account_id: int
    key_id: int
    amount: int
    windows: tuple[str, str, str]  # key/day, key/month, member/month spend windows
    reserved: tuple[bool, ...] = (False, False, False)  # which windows the hold counted in


def hold_record(request_id: str, account_id: int, key_id: int, amount: int, budgets: Budgets = NO_BUDGETS,
                user_id: int | None = None, now: float | None = None) -> Hold:
    """The hold a request will own if the hold script accepts it, its spend windows named by `now`."""
    now = time.time() if now is None else now
    windows = (key_day_key(account_id, key_id, now), key_month_key(account_id, key_id, now), member_month_key(account_id, user_id, now))
    return Hold(request_id, account_id, key_id, amount, windows, tuple(v is not None for v in budgets.limits))


def hold_call(hold: Hold, key_limit: int | None, expires_at: float, budgets: Budgets = NO_BUDGETS,
              least: int | None = None) -> tuple[list[Any], list[Any]]:
    """KEYS and ARGV of the hold script (relay/admission.py runs the same script inside its own).
    `least` makes the hold flexible: as much of `hold.amount` as every scope has room for, down to it."""
    bucket = money_bucket(hold.account_id)
    return ([account_key(hold.account_id), api_key_key(hold.account_id, hold.key_id), hold_key(bucket, hold.request_id), holds_key(bucket),
             *hold.windows],
            [hold.amount, -1 if key_limit is None else key_limit, int(expires_at), hold.request_id,
             *(-1 if v is None else v for v in budgets.limits), DAY_TTL_SECONDS, MONTH_TTL_SECONDS,
             -1 if least is None else least])


def settle_call(hold: Hold, cost: int, event: bytes) -> tuple[list[Any], list[Any]]:
    bucket = money_bucket(hold.account_id)
    return ([hold_key(bucket, hold.request_id), holds_key(bucket), usage_stream(bucket), account_key(hold.account_id),
             api_key_key(hold.account_id, hold.key_id), *hold.windows],
            [hold.request_id, cost, event, *("1" if r else "0" for r in hold.reserved), DAY_TTL_SECONDS, MONTH_TTL_SECONDS])


def refusal(code: int, available: int) -> HoldRefused:
    reason = {0: "balance", -1: "key_limit"}.get(code) or WINDOW_REFUSALS[code]
    return HoldRefused(reason, int(available))


# The money scripts' text, for relay/admission.py and relay/journal.py to embed as Lua functions.
HOLD_LUA, SETTLE_LUA = _HOLD, _SETTLE
SETTLE_FUNCTION = f"local function money_settle(KEYS, ARGV)\n{_SETTLE}\nend\n"


class Quota:
    """The relay's and the control plane's handle on live money in Redis."""

    def __init__(self, redis: Redis[bytes]) -> None:
        self.redis = redis
        self._hold = redis.register_script(_HOLD)
        self._settle = redis.register_script(_SETTLE)
        self._release = redis.register_script(_RELEASE_EXPIRED)
        self._credit = redis.register_script(_CREDIT)
        self._add_spent = redis.register_script(_ADD_SPENT)

    def hold(self, request_id: str, account_id: int, key_id: int, amount: int, key_limit: int | None, expires_at: float,
             budgets: Budgets = NO_BUDGETS, user_id: int | None = None, now: float | None = None) -> Hold:
        """Reserve `amount` or refuse. `now` (the request's start) names the spend windows."""
        hold = hold_record(request_id, account_id, key_id, amount, budgets, user_id, now)
        keys, args = hold_call(hold, key_limit, expires_at, budgets)
        reply = self._hold(keys=keys, args=args)
        if reply[0] == 1:
            return hold
        raise refusal(reply[0], reply[1])

    def settle(self, hold: Hold, cost: int, event: bytes) -> int | None:
        """Release the hold, charge `cost` (cut so no scope goes below zero), queue the usage event.
        The amount charged, or None if the request was already settled."""
        keys, args = settle_call(hold, cost, event)
        charged = int(self._settle(keys=keys, args=args))
        return None if charged < 0 else charged

    def log_only(self, account_id: int, event: bytes) -> None:
        """Queue the usage event of a request that held nothing (refused before the hold)."""
        self.redis.xadd(usage_stream(money_bucket(account_id)), {"e": event})

    def release_expired(self, now: float, limit: int = 1000) -> int:
        """Release holds past their expiry (left by a crashed relay), up to `limit` looked at in all
        buckets. Returns how many were released."""
        released, left = 0, limit
        first = int(now) % len(HOLDS_INDEXES)  # each run starts elsewhere: a bucket full of them starves no other
        for bucket in [*range(first, len(HOLDS_INDEXES)), *range(first)]:
            if left <= 0:
                break
            expired = self.redis.zrangebyscore(HOLDS_INDEXES[bucket], "-inf", now, start=0, num=left)
            left -= len(expired)
            for raw in expired:
                if self.release(bucket, raw.decode() if isinstance(raw, bytes) else raw):
                    released += 1
        return released

    def release(self, bucket: int, request_id: str) -> bool:
        """Release one request's hold, if it is open, uncharged; True when it was. Two round trips:
        the record names the scopes it reserved in, and the script is given every key it touches."""
        record = hold_key(bucket, request_id)
        named = self.redis.hmget(record, "acct", "akey", "w1", "w2", "w3")
        scopes = [n.decode() if isinstance(n, bytes) else n for n in named if n is not None]
        return bool(self._release(keys=[record, holds_key(bucket), *scopes], args=[request_id, LAPSED_HOLD_SECONDS]))

    def credit(self, account_id: int, delta: int, sql_balance_after: int) -> int:
        return int(self._credit(keys=[account_key(account_id)], args=[delta, sql_balance_after]))

    def add_key_spent(self, account_id: int, key_id: int, delta: int) -> None:
        """Move a key's live spend by `delta` (a refund lowers it), where Redis has one; a key Redis
        does not know is seeded from SQL, which has the change already."""
        self._add_spent(keys=[api_key_key(account_id, key_id)], args=[delta])

    def seed_account(self, account_id: int, sql_balance: int) -> bool:
        """Set the live balance of an account Redis does not know yet; never overwrites."""
        return bool(self.redis.hsetnx(account_key(account_id), "bal", sql_balance))

    def seed_key_spent(self, account_id: int, key_id: int, sql_spent: int) -> bool:
        return bool(self.redis.hsetnx(api_key_key(account_id, key_id), "spent", sql_spent))

    def account(self, account_id: int) -> tuple[int, int]:
        bal, held = self.redis.hmget(account_key(account_id), "bal", "held")
        return int(bal or 0), int(held or 0)

    def key_spent(self, account_id: int, key_id: int) -> tuple[int, int]:
        spent, held = self.redis.hmget(api_key_key(account_id, key_id), "spent", "held")
        return int(spent or 0), int(held or 0)

    # --- spend windows: what the consoles show, and seeding after a Redis loss --------------
    def window(self, name: str) -> tuple[int, int]:
        """(spent, held) in one spend window."""
        spent, held = self.redis.hmget(name, "spent", "held")
        return int(spent or 0), int(held or 0)

    def seed_windows(self, spent_by_window: dict[str, int]) -> None:
        """Set each window's spent from SQL where Redis has none; never overwrites."""
        if not spent_by_window:
            return
        pipe = self.redis.pipeline(transaction=False)
        for name, spent in spent_by_window.items():
            pipe.hsetnx(name, "spent", spent)
            pipe.expire(name, DAY_TTL_SECONDS if is_day_window(name) else MONTH_TTL_SECONDS)
        pipe.execute()

    def open_holds(self) -> int:
        pipe = self.redis.pipeline(transaction=False)  # one round trip (per master) for every bucket's index
        for index in HOLDS_INDEXES:
            pipe.zcard(index)
        return sum(int(n) for n in pipe.execute())
