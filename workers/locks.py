"""A Redis lock with an owner token and a lease: whoever holds it acts, a crashed holder's lease
lapses, and nobody can release a lock they no longer hold."""
from __future__ import annotations

import os

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lock:
    def __init__(self, redis, name: str, lease_seconds: float):
        self.redis = redis
        self.name = name
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.token = os.urandom(16).hex()
        self.held = False

    def acquire(self) -> bool:
        self.held = bool(self.redis.set(self.name, self.token, nx=True, px=self.lease_ms))
        return self.held

    def release(self) -> None:
        if self.held:
            self.redis.register_script(_RELEASE)(keys=[self.name], args=[self.token])
            self.held = False

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
