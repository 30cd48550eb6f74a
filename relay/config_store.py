"""Where the routing snapshot lives in Redis, how it is published, and how a relay process follows
it (and, on the same subscription, the change log of key records: relay/key_cache.py).

Publishing is ordered by a counter taken *after* the SQL commit: a snapshot is stored only if its
version is newer than the stored one, so a slow publisher can never roll the relays back. A snapshot
whose content equals the stored one (the periodic backstop republish, mostly) is not stored at all,
so relays do not decode the same config again.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from relay import redis_keys
from relay.key_cache import CacheLimits, KeyCache
from relay.keys import WAKE_MESSAGE
from relay.redis_connect import reread_slot_map
from relay.snapshot import Snapshot, empty_snapshot

if TYPE_CHECKING:
    from redis import Redis

COUNTER_KEY = redis_keys.CONFIG_COUNTER
VERSION_KEY = redis_keys.CONFIG_VERSION
SNAPSHOT_KEY = redis_keys.CONFIG_SNAPSHOT
DIGEST_KEY = redis_keys.CONFIG_DIGEST
CHANNEL = redis_keys.CONFIG_CHANNEL

log = logging.getLogger(__name__)

_STORE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local v = tonumber(ARGV[1])
if v <= current then return 0 end
if current > 0 and redis.call('GET', KEYS[3]) == ARGV[4] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[4])
redis.call('SET', KEYS[1], v)
redis.call('PUBLISH', ARGV[3], v)
return 1
"""


def next_version(redis: Redis[bytes]) -> int:
    return int(redis.incr(COUNTER_KEY))


def digest(payload: dict[str, Any]) -> str:
    """What the snapshot says, without when it was built or its version."""
    content = {k: v for k, v in payload.items() if k not in ("version", "built_at")}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def store(redis: Redis[bytes], version: int, payload: dict[str, Any]) -> bool:
    """Store and announce a snapshot; False when a newer one, or the same content, is already there."""
    script = redis.register_script(_STORE)
    return bool(script(keys=[VERSION_KEY, SNAPSHOT_KEY, DIGEST_KEY], args=[version, orjson.dumps(payload), CHANNEL, digest(payload)]))


def load(redis: Redis[bytes], decrypt: Callable[[str], str]) -> Snapshot | None:
    raw = redis.get(SNAPSHOT_KEY)
    if raw is None:
        return None
    return Snapshot.from_payload(orjson.loads(raw), decrypt)


class SnapshotHolder:
    """Holds the current snapshot of one relay process (`current` is swapped atomically) and its
    cache of key records (`keys`), and keeps both current."""

    def __init__(self, redis: Redis[bytes], decrypt: Callable[[str], str], poll_seconds: float = 5.0,
                 key_cache: CacheLimits | None = None) -> None:
        self.redis = redis
        self.decrypt = decrypt
        self.poll_seconds = poll_seconds
        self.current: Snapshot = empty_snapshot()
        self.loaded_at = 0.0
        self.checked_at = 0.0  # when Redis last confirmed (or gave) the newest snapshot: its age for /readyz and metrics
        self.keys = KeyCache(redis, key_cache or CacheLimits())
        self.following = True

    def refresh(self) -> bool:
        """Drop key records that changed, and load the stored snapshot if it is newer than ours.
        Returns True when the snapshot was swapped."""
        self.keys.apply_changes()
        return self.refresh_snapshot()

    def refresh_snapshot(self) -> bool:
        # Versions only go backwards when Redis lost its counter: take what it has then.
        stored = self.redis.get(VERSION_KEY)
        if stored is None:
            return False
        if int(stored) == self.current.version:
            self.checked_at = time.time()
            return False
        snap = load(self.redis, self.decrypt)
        if snap is None or snap.version == self.current.version:
            return False
        self.current = snap
        self.loaded_at = self.checked_at = time.time()
        log.info("snapshot v%s loaded: %d channels, %d groups", snap.version, len(snap.channels), len(snap.groups))
        return True

    def follow(self) -> None:
        """Run forever (in a greenlet): refresh on every announcement, and poll as a backstop."""
        while self.following:
            pubsub = None
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.refresh()
                while self.following:
                    # A key change wakes only the key cache; a config announcement or the poll
                    # timeout compares snapshot versions too.
                    message = pubsub.get_message(timeout=self.poll_seconds)
                    if message is not None and message.get("data") in (WAKE_MESSAGE, WAKE_MESSAGE.encode()):
                        self.keys.apply_changes()
                    else:
                        self.refresh()
            except Exception:  # Redis restarts must not kill the follower
                if not self.following:
                    break
                log.exception("snapshot follower lost Redis; retrying")
                reread_slot_map(self.redis)
                time.sleep(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # closing a connection Redis already dropped; the loop reconnects  # nosec B110
                        pass
