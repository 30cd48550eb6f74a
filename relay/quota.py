"""Credit holds and settlement in Redis, each one atomic Lua script (one round trip).

Redis keeps the live view of money: per account `bal` (the balance with every settled charge
applied) and `held` (the sum of open holds); per API key `spent` and `held` for its credit limit.
SQL keeps the durable ledger; the usage stream carries each settled charge from here to SQL.
"""
from __future__ import annotations

from dataclasses import dataclass

from relay.usage import USAGE_STREAM

HOLDS_ZSET = "sb:holds"


def account_key(account_id: int) -> str:
    return f"sb:acct:{account_id}"


def api_key_key(key_id: int) -> str:
    return f"sb:akey:{key_id}"


def hold_key(request_id: str) -> str:
    return f"sb:hold:{request_id}"


_HOLD = """
local amt = tonumber(ARGV[1])
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal') or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if bal - held < amt or (amt == 0 and bal - held < 0) then
  return {0, bal - held}
end
local limit = tonumber(ARGV[2])
if limit >= 0 then
  local spent = tonumber(redis.call('HGET', KEYS[2], 'spent') or '0')
  local kheld = tonumber(redis.call('HGET', KEYS[2], 'held') or '0')
  if spent + kheld + amt > limit then
    return {-1, limit - spent - kheld}
  end
end
redis.call('HINCRBY', KEYS[1], 'held', amt)
redis.call('HINCRBY', KEYS[2], 'held', amt)
redis.call('HSET', KEYS[3], 'amt', amt, 'acct', KEYS[1], 'akey', KEYS[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
return {1, bal - held - amt}
"""

# Settle is idempotent: the hold record is the token that lets a request be charged once.
_SETTLE = """
local amt = redis.call('HGET', KEYS[1], 'amt')
if not amt then return 0 end
amt = tonumber(amt)
local cost = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'held', -amt)
redis.call('HINCRBY', KEYS[5], 'held', -amt)
if cost ~= 0 then
  redis.call('HINCRBY', KEYS[4], 'bal', -cost)
  redis.call('HINCRBY', KEYS[5], 'spent', cost)
end
redis.call('XADD', KEYS[3], '*', 'e', ARGV[3])
return 1
"""

_RELEASE_EXPIRED = """
local amt = redis.call('HGET', KEYS[1], 'amt')
if not amt then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
local acct = redis.call('HGET', KEYS[1], 'acct')
local akey = redis.call('HGET', KEYS[1], 'akey')
redis.call('HINCRBY', acct, 'held', -tonumber(amt))
redis.call('HINCRBY', akey, 'held', -tonumber(amt))
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return tonumber(amt)
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


class HoldRefused(Exception):
    def __init__(self, reason: str, available: int):
        super().__init__(reason)
        self.reason = reason  # "balance" | "key_limit"
        self.available = available


@dataclass(frozen=True, slots=True)
class Hold:
    request_id: str
    account_id: int
    key_id: int
    amount: int


def hold_call(request_id: str, account_id: int, key_id: int, amount: int, key_limit: int | None, expires_at: float) -> tuple[list, list]:
    """KEYS and ARGV of the hold script (relay/admission.py runs the same script inside its own)."""
    return ([account_key(account_id), api_key_key(key_id), hold_key(request_id), HOLDS_ZSET],
            [amount, -1 if key_limit is None else key_limit, int(expires_at), request_id])


def settle_call(hold: "Hold", cost: int, event: bytes) -> tuple[list, list]:
    return ([hold_key(hold.request_id), HOLDS_ZSET, USAGE_STREAM, account_key(hold.account_id), api_key_key(hold.key_id)],
            [hold.request_id, cost, event])


def refusal(code: int, available: int) -> HoldRefused:
    return HoldRefused("balance" if code == 0 else "key_limit", int(available))


# The money scripts' text, for relay/admission.py to embed as Lua functions.
HOLD_LUA, SETTLE_LUA = _HOLD, _SETTLE


class Quota:
    """The relay's and the control plane's handle on live money in Redis."""

    def __init__(self, redis):
        self.redis = redis
        self._hold = redis.register_script(_HOLD)
        self._settle = redis.register_script(_SETTLE)
        self._release = redis.register_script(_RELEASE_EXPIRED)
        self._credit = redis.register_script(_CREDIT)

    def hold(self, request_id: str, account_id: int, key_id: int, amount: int, key_limit: int | None, expires_at: float) -> Hold:
        keys, args = hold_call(request_id, account_id, key_id, amount, key_limit, expires_at)
        ok, available = self._hold(keys=keys, args=args)
        if ok == 1:
            return Hold(request_id, account_id, key_id, amount)
        raise refusal(ok, available)

    def settle(self, hold: Hold, cost: int, event: bytes) -> bool:
        """Release the hold, charge `cost`, queue the usage event. False if already settled."""
        keys, args = settle_call(hold, cost, event)
        return self._settle(keys=keys, args=args) == 1

    def log_only(self, event: bytes) -> None:
        """Queue the usage event of a request that held nothing (refused before the hold)."""
        self.redis.xadd(USAGE_STREAM, {"e": event})

    def release_expired(self, now: float, limit: int = 1000) -> int:
        """Release holds past their expiry (left by a crashed relay). Returns how many."""
        released = 0
        for rid in self.redis.zrangebyscore(HOLDS_ZSET, "-inf", now, start=0, num=limit):
            rid = rid.decode() if isinstance(rid, bytes) else rid
            if self._release(keys=[hold_key(rid), HOLDS_ZSET], args=[rid]):
                released += 1
        return released

    def credit(self, account_id: int, delta: int, sql_balance_after: int) -> int:
        return int(self._credit(keys=[account_key(account_id)], args=[delta, sql_balance_after]))

    def seed_account(self, account_id: int, sql_balance: int) -> bool:
        """Set the live balance of an account Redis does not know yet; never overwrites."""
        return bool(self.redis.hsetnx(account_key(account_id), "bal", sql_balance))

    def seed_key_spent(self, key_id: int, sql_spent: int) -> bool:
        return bool(self.redis.hsetnx(api_key_key(key_id), "spent", sql_spent))

    def account(self, account_id: int) -> tuple[int, int]:
        bal, held = self.redis.hmget(account_key(account_id), "bal", "held")
        return int(bal or 0), int(held or 0)

    def key_spent(self, key_id: int) -> tuple[int, int]:
        spent, held = self.redis.hmget(api_key_key(key_id), "spent", "held")
        return int(spent or 0), int(held or 0)

    def open_holds(self) -> int:
        return int(self.redis.zcard(HOLDS_ZSET))
