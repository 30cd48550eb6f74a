"""Fixed-window attempt counters in Redis for the console's guessable forms (sign-up, redeem).

Sign-in keeps its own counters in auth.py; these follow the same pattern for other forms.
"""
from __future__ import annotations

import time

from controlplane.runtime import runtime
from relay import redis_keys


def _key(action: str, subject: str, window: int) -> str:
    return redis_keys.throttle_key(action, window, subject)


def exceeded(action: str, subjects: list[str], limit: int, window_seconds: int = 60) -> bool:
    """True when any subject (an address, a user id) has used up its attempts in this window."""
    window = int(time.time() // window_seconds)
    counts = runtime().redis.mget([_key(action, s, window) for s in subjects])
    return any(int(c or 0) >= limit for c in counts)


def count(action: str, subjects: list[str], window_seconds: int = 60) -> None:
    window = int(time.time() // window_seconds)
    pipe = runtime().redis.pipeline()
    for s in subjects:
        pipe.incr(_key(action, s, window))
        pipe.expire(_key(action, s, window), window_seconds * 2)
    pipe.execute()
