"""The usage consumer behind `switchboard ingest`: the usage stream drained into SQL as events arrive.

It blocks on XREADGROUP until events come, then lets a moment pass (`linger`) so that a batch
gathers: one transaction and one acknowledgement per few hundred events, not per event, which is
most of what ingestion costs. Each batch goes through `workers/usage.py` (written, dead-lettered, or
left pending when the database is down; acknowledged only once in SQL or dead-lettered).

What a consumer leaves unacknowledged is never lost: a consumer that comes back under the same name
reads its own pending entries first; one of this host whose process is gone is taken over at once;
any other's entries after `STALE_MS`. While the database or Redis is unavailable it waits and tries
again (1 s doubling to 30 s) instead of exiting. `stop()` (SIGTERM, SIGINT) lets the batch in hand
finish and be acknowledged, then `run` returns.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.usage import USAGE_GROUP, USAGE_STREAM
from workers import usage

log = logging.getLogger(__name__)

BLOCK_MS = 500  # longest wait in one read: how soon an idle consumer notices it was asked to stop
CLAIM_EVERY = 15.0  # seconds between looks for entries that other consumers left behind
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # waits while the database or Redis is unavailable


@dataclass
class Totals:
    """What a consumer has done since it started."""

    batches: int = 0
    written: int = 0
    dead_lettered: int = 0
    pauses: int = 0  # waits for the database or Redis to come back


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Consumer:
    def __init__(self, redis, batch_size: int, linger: float = 0.0, name: str | None = None, block_ms: int = BLOCK_MS):
        self.redis = redis
        self.batch_size = batch_size
        self.linger = linger
        self.block_ms = block_ms
        self.name = name or usage.consumer_name()
        self.totals = Totals()
        self._stop = threading.Event()
        self._own_first = True  # what this name was given before and did not acknowledge comes first
        self._next_claim = 0.0
        self._retry = RETRY_FIRST

    # --- control -----------------------------------------------------------------------------------
    def stop(self, *_) -> None:
        """Finish the batch in hand, acknowledge it, and return from `run` (safe in a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> Totals:
        """Consume until stopped."""
        usage.ensure_group(self.redis)
        log.info("usage consumer %s reading %s", self.name, USAGE_STREAM)
        while not self.stopping:
            try:
                if self._step(self._next_rows(wait=True)):
                    self._pause("the database is unavailable")
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                self._pause(f"Redis is unavailable: {error}")
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                usage.ensure_group(self.redis)  # Redis came back empty: the group goes first
        self._leave()
        log.info("usage consumer %s stopped: %d written in %d batches, %d dead-lettered", self.name, self.totals.written,
                 self.totals.batches, self.totals.dead_lettered)
        return self.totals

    def drain(self, max_seconds: float = 10.0) -> Totals:
        """Ingest what is waiting now (for up to `max_seconds`), then return; stops at once when the
        database is unavailable, leaving the rest pending."""
        usage.ensure_group(self.redis)
        deadline = time.monotonic() + max_seconds
        while not self.stopping and time.monotonic() < deadline:
            rows = self._next_rows(wait=False)
            if not rows or self._step(rows):
                break
        return self.totals

    # --- one batch ---------------------------------------------------------------------------------
    def _step(self, rows) -> bool:
        """Store and acknowledge one batch; True when the database stopped answering (the rest of the
        batch stays pending, ours to read again first)."""
        if not rows:
            return False
        started = time.perf_counter()
        out = usage.store(usage.pending(rows))
        usage.acknowledge(self.redis, out)
        log.debug("batch of %d: %d written, %d dead-lettered in %.1f ms", len(rows), out.written, len(out.dead),
                  (time.perf_counter() - started) * 1000)
        self.totals.batches += 1
        self.totals.written += out.written
        self.totals.dead_lettered += len(out.dead)
        if out.stuck:
            self._own_first = True
            return True
        self._retry = RETRY_FIRST
        return False

    def _pause(self, why: str) -> None:
        self.totals.pauses += 1
        log.error("usage consumer waiting %.0f s: %s", self._retry, why)
        self._stop.wait(self._retry)
        self._retry = min(self._retry * 2, RETRY_MAX)
        self._own_first = True

    # --- reading -----------------------------------------------------------------------------------
    def _read(self, start: str, count: int, block: int | None = None) -> list:
        reply = self.redis.xreadgroup(USAGE_GROUP, self.name, {USAGE_STREAM: start}, count=count, block=block)
        return list(reply[0][1]) if reply else []

    def _next_rows(self, wait: bool) -> list:
        if self._own_first:
            rows = self._read("0", self.batch_size)
            if rows:
                return rows
            self._own_first = False
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + CLAIM_EVERY
            rows = self._claim()
            if rows:
                return rows
        rows = self._read(">", self.batch_size, self.block_ms if wait else None)
        if wait and rows and len(rows) < self.batch_size and self.linger > 0 and not self.stopping:
            # A batch gathers: at 2,000 events a second, 500 of them in 0.25 s.
            self._stop.wait(self.linger)
            rows += self._read(">", self.batch_size - len(rows))
        return rows

    def _claim(self) -> list:
        """Entries of this host's consumers whose process is gone (at once), then anyone's that were
        read `STALE_MS` ago and never acknowledged."""
        host = socket.gethostname()
        for info in self.redis.xinfo_consumers(USAGE_STREAM, USAGE_GROUP):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            owner, _, pid = name.rpartition(":")
            if name == self.name or owner != host or not pid.isdigit() or _alive(int(pid)):
                continue
            if not info["pending"]:
                self.redis.xgroup_delconsumer(USAGE_STREAM, USAGE_GROUP, name)
                continue
            ids = [p["message_id"] for p in
                   self.redis.xpending_range(USAGE_STREAM, USAGE_GROUP, "-", "+", self.batch_size + 1, consumername=name)]
            rows = self.redis.xclaim(USAGE_STREAM, USAGE_GROUP, self.name, 0, ids[:self.batch_size])
            if len(ids) <= self.batch_size:  # all it had is ours now
                self.redis.xgroup_delconsumer(USAGE_STREAM, USAGE_GROUP, name)
            if rows:
                log.warning("took over %d usage events from %s, which is gone", len(rows), name)
                return rows
        claimed = self.redis.xautoclaim(USAGE_STREAM, USAGE_GROUP, self.name, min_idle_time=usage.STALE_MS, start_id="0-0",
                                        count=self.batch_size)
        return list(claimed[1]) if claimed else []

    def _leave(self) -> None:
        """A consumer that stops with nothing pending leaves the group (its name would only pile up)."""
        try:
            for info in self.redis.xinfo_consumers(USAGE_STREAM, USAGE_GROUP):
                name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
                if name == self.name and not info["pending"]:
                    self.redis.xgroup_delconsumer(USAGE_STREAM, USAGE_GROUP, self.name)
        except Exception:  # tidying only: a name left behind is removed by the next consumer of this host
            log.debug("could not leave the usage group", exc_info=True)


__all__ = ["BLOCK_MS", "Consumer", "Totals"]
