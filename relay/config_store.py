"""Where the snapshot lives in Redis, how it is published, and how a relay process follows it.

Publishing is ordered by a counter taken *after* the SQL commit: a snapshot is stored only if its
version is newer than the stored one, so a slow publisher can never roll the relays back.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import orjson

from relay.snapshot import Snapshot, empty_snapshot

if TYPE_CHECKING:
    from redis import Redis

COUNTER_KEY = "sb:cfg:counter"
VERSION_KEY = "sb:cfg:version"
SNAPSHOT_KEY = "sb:cfg:snapshot"
CHANNEL = "sb:cfg"

log = logging.getLogger(__name__)

_STORE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local v = tonumber(ARGV[1])
if v <= current then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], v)
redis.call('PUBLISH', ARGV[3], v)
return 1
"""


def next_version(redis: Redis[bytes]) -> int:
    return int(redis.incr(COUNTER_KEY))


def store(redis: Redis[bytes], version: int, payload: dict[str, Any]) -> bool:
    """Store and announce a snapshot; False when a newer one is already there."""
    script = redis.register_script(_STORE)
    return bool(script(keys=[VERSION_KEY, SNAPSHOT_KEY], args=[version, orjson.dumps(payload), CHANNEL]))


def load(redis: Redis[bytes], decrypt: Callable[[str], str]) -> Snapshot | None:
    raw = redis.get(SNAPSHOT_KEY)
    if raw is None:
        return None
    return Snapshot.from_payload(orjson.loads(raw), decrypt)


class SnapshotHolder:
    """Holds the current snapshot of one relay process; `current` is swapped atomically."""

    def __init__(self, redis: Redis[bytes], decrypt: Callable[[str], str], poll_seconds: float = 5.0) -> None:
        self.redis = redis
        self.decrypt = decrypt
        self.poll_seconds = poll_seconds
        self.current: Snapshot = empty_snapshot()
        self.loaded_at = 0.0

    def refresh(self) -> bool:
        """Load the stored snapshot if it is newer than ours. Returns True when swapped."""
        stored = self.redis.get(VERSION_KEY)
        if stored is None or int(stored) <= self.current.version:
            return False
        snap = load(self.redis, self.decrypt)
        if snap is None or snap.version <= self.current.version:
            return False
        self.current = snap
        self.loaded_at = time.time()
        log.info("snapshot v%s loaded: %d keys, %d channels", snap.version, len(snap.keys), len(snap.channels))
        return True

    def follow(self) -> None:
        """Run forever (in a greenlet): refresh on every announcement, and poll as a backstop."""
        while True:
            pubsub = None
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.refresh()
                while True:
                    # An announcement or the poll timeout: either way, compare versions.
                    pubsub.get_message(timeout=self.poll_seconds)
                    self.refresh()
            except Exception:  # Redis restarts must not kill the follower
                log.exception("snapshot follower lost Redis; retrying")
                time.sleep(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
