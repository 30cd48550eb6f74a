"""Each relay process's bounded cache of key records (relay/keys.py), in front of Redis.

- A hit costs a dict lookup: no Redis round trip. A miss costs one GET; the answer is kept for
  `ttl` seconds (found) or `negative_ttl` seconds (unknown hash), in two LRUs of bounded size, so a
  flood of random keys costs one round trip each and can only push older entries out.
- The control plane appends every change to a Redis stream (`CHANGES_STREAM`, entry ids are a
  sequence 1-0, 2-0, …) and publishes a wake-up. `apply_changes` reads what is new and drops the
  named hashes; a gap in the sequence (trimmed, or a Redis that lost its data) drops everything.
  Without the wake-ups (a lost subscription) the poll and the TTL still bound staleness.
- A miss that was in flight while an invalidation arrived is answered but not cached: otherwise a
  record read just before a write could outlive the write's invalidation until its TTL.

Hand-written rather than a cache library: those offer the LRU and TTL, not the race guard or the
change log, and the hit path here is one `dict.get` and one `move_to_end`.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.errors import RelayError
from relay.keys import CHANGES_STREAM, EVERYTHING, KeyView, decode, id_key, record_key

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

READ_BATCH = 200  # change entries per read; each names up to relay.keys.CHANGE_BATCH keys


@dataclass(frozen=True)
class CacheLimits:
    """Sizes are entries. ~0.6 KB per found key, ~0.15 KB per unknown hash."""

    size: int = 50_000
    ttl: float = 60.0
    negative_size: int = 10_000
    negative_ttl: float = 10.0


@dataclass
class CacheStats:
    hits: int = 0
    negative_hits: int = 0
    misses: int = 0
    invalidations: int = 0
    flushes: int = 0


def _unavailable() -> RelayError:
    return RelayError(503, "service_unavailable", "The gateway cannot check API keys right now; retry shortly.", type="server_error")


class KeyCache:
    def __init__(self, redis: Redis[bytes], limits: CacheLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.limits = limits or CacheLimits()
        self.clock = clock
        self._found: OrderedDict[str, tuple[float, KeyView]] = OrderedDict()
        self._missing: OrderedDict[str, float] = OrderedDict()
        self._ids: OrderedDict[int, str] = OrderedDict()  # key id → hash; a key never changes its hash
        self.epoch = 0  # bumped by every invalidation: a miss that saw it change is not cached
        self.seen: int | None = None  # the last change entry applied (its sequence number)
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._found)

    # --- lookups ---------------------------------------------------------------------------------
    def get(self, key_hash: str) -> KeyView | None:
        """The key with this hash, None when no such key exists (or it was deleted)."""
        now = self.clock()
        entry = self._found.get(key_hash)
        if entry is not None and entry[0] > now:
            try:
                self._found.move_to_end(key_hash)
            except KeyError:  # dropped by an invalidation in between
                pass
            self.stats.hits += 1
            return entry[1]
        until = self._missing.get(key_hash)
        if until is not None and until > now:
            self.stats.negative_hits += 1
            return None
        return self._load(key_hash, now)

    def by_id(self, key_id: int) -> KeyView | None:
        """A key named by id (the console's playground tokens); one extra round trip the first time."""
        key_hash = self._ids.get(key_id)
        if key_hash is None:
            try:
                raw = self.redis.get(id_key(key_id))
            except Exception:
                log.exception("key index read failed")
                raise _unavailable() from None
            if raw is None:
                return None
            key_hash = raw.decode() if isinstance(raw, bytes) else raw
            self._ids[key_id] = key_hash
            if len(self._ids) > 1000:
                self._ids.popitem(last=False)
        return self.get(key_hash)

    def _load(self, key_hash: str, now: float) -> KeyView | None:
        epoch = self.epoch
        self.stats.misses += 1
        try:
            raw = self.redis.get(record_key(key_hash))
        except Exception:
            log.exception("key record read failed")
            raise _unavailable() from None
        key = decode(raw) if raw is not None else None
        if epoch != self.epoch:
            return key
        if key is None:
            self._missing[key_hash] = now + self.limits.negative_ttl
            self._missing.move_to_end(key_hash)
            while len(self._missing) > self.limits.negative_size:
                self._missing.popitem(last=False)
        else:
            self._missing.pop(key_hash, None)
            self._found[key_hash] = (now + self.limits.ttl, key)
            self._found.move_to_end(key_hash)
            while len(self._found) > self.limits.size:
                self._found.popitem(last=False)
        return key

    # --- invalidation ----------------------------------------------------------------------------
    def invalidate(self, hashes: Iterable[str]) -> None:
        self.epoch += 1
        for h in hashes:
            self._found.pop(h, None)
            self._missing.pop(h, None)
        self.stats.invalidations += 1

    def clear(self) -> None:
        self.epoch += 1
        self._found.clear()
        self._missing.clear()
        self.stats.flushes += 1

    def apply_changes(self) -> int:
        """Read the change log since the last entry applied; returns how many entries were read."""
        if self.seen is None:
            newest = self.redis.xrevrange(CHANGES_STREAM, "+", "-", count=1)
            self.seen = _seq(newest[0][0]) if newest else 0
            self.clear()
            return 0
        read = 0
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xrange(CHANGES_STREAM, f"{self.seen + 1}-0", "+", count=READ_BATCH)
            pipe.xrevrange(CHANGES_STREAM, "+", "-", count=1)
            entries, newest = pipe.execute()
            newest_seq = _seq(newest[0][0]) if newest else 0
            if newest_seq < self.seen or (entries and _seq(entries[0][0]) != self.seen + 1):
                # Entries we never saw were trimmed, or Redis lost the log: trust nothing cached.
                log.warning("key change log gap (had %s, newest %s): dropping the key cache", self.seen, newest_seq)
                self.clear()
                self.seen = newest_seq
                return read
            for entry_id, fields in entries:
                self._apply(fields)
                self.seen = _seq(entry_id)
            read += len(entries)
            if len(entries) < READ_BATCH:
                return read

    def _apply(self, fields: dict[bytes | str, bytes | str]) -> None:
        named = fields.get(b"h", fields.get("h", b""))
        named = named.decode() if isinstance(named, bytes) else named
        if named == EVERYTHING:
            self.clear()
        elif named:
            self.invalidate(named.split(" "))


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])
