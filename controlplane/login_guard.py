"""Sign-in throttles that stop guessing without locking anyone out of their own account.

Three counters in Redis, all counting failures:
- one email from one address, per minute: a guesser at one account is refused;
- one address, per minute, any email: a sprayer across accounts is refused;
- one email from everyone, per quarter hour: a distributed guesser makes every attempt on that email
  wait a little longer (doubling, capped), the owner's included, but never refused.
A refusal reads the same whichever counter tripped and whether or not the email has an account.
"""
from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass

from relay import redis_keys

MINUTE = 60
QUARTER = 900
# Failures on one email from everyone before answers slow down, and the first wait.
DELAY_AFTER = 10
FIRST_DELAY = 0.25


@dataclass(frozen=True)
class Verdict:
    refused: bool
    delay: float  # seconds to wait before answering, refused or not


def delay_for(failures: int, cap: float) -> float:
    """The wait before answering an attempt on an email that failed `failures` times lately."""
    if failures < DELAY_AFTER or cap <= 0:
        return 0.0
    return min(cap, FIRST_DELAY * 2 ** min(failures - DELAY_AFTER, 16))


def _email(email: str) -> str:
    # Hashed: the keys say nothing about which addresses people typed.
    return hashlib.sha256(email.encode()).hexdigest()[:32]


def _address(ip: str) -> str:
    # One IPv6 host usually holds a whole /64: counting single addresses would not count it at all.
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class LoginGuard:
    def __init__(self, redis, per_email_ip: int, per_ip: int, delay_cap: float):
        self.redis = redis
        self.per_email_ip = per_email_ip
        self.per_ip = per_ip
        self.delay_cap = delay_cap

    def _keys(self, email: str, ip: str, now: float) -> tuple[str, str, str]:
        minute, quarter, who, ip = int(now // MINUTE), int(now // QUARTER), _email(email), _address(ip)
        return redis_keys.login_keys(minute, quarter, who, ip)

    def check(self, email: str, ip: str) -> Verdict:
        pair, by_ip, by_email = (int(v or 0) for v in self.redis.mget(self._keys(email, ip, time.time())))
        refused = pair >= self.per_email_ip or by_ip >= self.per_ip
        return Verdict(refused=refused, delay=delay_for(by_email, self.delay_cap))

    def failed(self, email: str, ip: str) -> None:
        pipe = self.redis.pipeline()
        for key, ttl in zip(self._keys(email, ip, time.time()), (2 * MINUTE, 2 * MINUTE, 2 * QUARTER), strict=True):
            pipe.incr(key)
            pipe.expire(key, ttl)
        pipe.execute()
