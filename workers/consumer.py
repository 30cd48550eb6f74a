"""The usage consumer behind `switchboard ingest`: the usage streams drained into SQL as events arrive.

It blocks on XREADGROUP until events come, then lets a moment pass (`linger`) so that a batch
gathers: one transaction and one acknowledgement per few hundred events, not per event, which is
most of what ingestion costs. Each batch goes through `workers/usage.py` (written, dead-lettered, or
left pending when the database is down; acknowledged only once in SQL or dead-lettered).

There is a usage stream per money bucket (relay/redis_keys.py): one on a single server, several
under Redis Cluster, where each is in a slot of its own and a read may name only one. Over several
streams a pass reads each in turn without waiting, starting one stream further on each time so that
none starves, and a batch may gather entries of several; only when a whole pass found nothing does
the consumer block, on one stream (the next pass's first) for `POLL_MS`: idle, it does not spin, and
an event in any stream is read within about that long.

What a consumer leaves unacknowledged is never lost, stream by stream: a consumer that comes back
under the same name reads its own pending entries first; one of this host whose process is gone is
taken over at once; any other's entries after `STALE_MS`. While the database or Redis is unavailable
it waits and tries again (1 s doubling to 30 s) instead of exiting. `stop()` (SIGTERM, SIGINT) lets
the batch in hand finish and be acknowledged, then `run` returns.
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

from relay.usage import USAGE_GROUP, USAGE_STREAMS
from workers import usage

log = logging.getLogger(__name__)

BLOCK_MS = 500  # longest wait in one read: how soon an idle consumer notices it was asked to stop
POLL_MS = 100  # over several streams, the wait on one: how long an event in another may go unread
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
    def __init__(self, redis, batch_size: int, linger: float = 0.0, name: str | None = None, block_ms: int = BLOCK_MS,
                 streams: tuple[str, ...] = USAGE_STREAMS):
        self.redis = redis
        self.batch_size = batch_size
        self.linger = linger
        self.block_ms = block_ms
        self.streams = streams
        self.name = name or usage.consumer_name()
        self.totals = Totals()
        self._stop = threading.Event()
        # Streams where what this name was given before and did not acknowledge comes first.
        self._own_first = list(streams)
        self._to_claim: list[str] = []  # streams this round of claims has yet to look at
        self._next_claim = 0.0
        self._turn = 0  # the stream the next pass starts with
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
        usage.ensure_group(self.redis, self.streams)
        log.info("usage consumer %s reading %s", self.name, ", ".join(self.streams))
        while not self.stopping:
            try:
                if self._step(self._next_entries(wait=True)):
                    self._pause("the database is unavailable")
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                self._pause(f"Redis is unavailable: {error}")
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                usage.ensure_group(self.redis, self.streams)  # Redis came back empty: the group goes first
        self._leave()
        log.info("usage consumer %s stopped: %d written in %d batches, %d dead-lettered", self.name, self.totals.written,
                 self.totals.batches, self.totals.dead_lettered)
        return self.totals

    def drain(self, max_seconds: float = 10.0) -> Totals:
        """Ingest what is waiting now (for up to `max_seconds`), then return; stops at once when the
        database is unavailable, leaving the rest pending."""
        usage.ensure_group(self.redis, self.streams)
        deadline = time.monotonic() + max_seconds
        while not self.stopping and time.monotonic() < deadline:
            entries = self._next_entries(wait=False)
            if not entries or self._step(entries):
                break
        return self.totals

    # --- one batch ---------------------------------------------------------------------------------
    def _step(self, entries: list[usage.Pending]) -> bool:
        """Store and acknowledge one batch; True when the database stopped answering (the rest of the
        batch stays pending, ours to read again first)."""
        if not entries:
            return False
        started = time.perf_counter()
        out = usage.store(entries)
        usage.acknowledge(self.redis, out)
        log.debug("batch of %d: %d written, %d dead-lettered in %.1f ms", len(entries), out.written, len(out.dead),
                  (time.perf_counter() - started) * 1000)
        self.totals.batches += 1
        self.totals.written += out.written
        self.totals.dead_lettered += len(out.dead)
        if out.stuck:
            self._own_first = list(self.streams)
            return True
        self._retry = RETRY_FIRST
        return False

    def _pause(self, why: str) -> None:
        self.totals.pauses += 1
        log.error("usage consumer waiting %.0f s: %s", self._retry, why)
        self._stop.wait(self._retry)
        self._retry = min(self._retry * 2, RETRY_MAX)
        self._own_first = list(self.streams)

    # --- reading -----------------------------------------------------------------------------------
    def _read(self, stream: str, start: str, count: int, block: int | None = None) -> list[usage.Pending]:
        reply = self.redis.xreadgroup(USAGE_GROUP, self.name, {stream: start}, count=count, block=block)
        return usage.pending(reply[0][1], stream) if reply else []

    def _next_entries(self, wait: bool) -> list[usage.Pending]:
        entries = self._own()
        if entries:
            return entries
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + CLAIM_EVERY
            self._to_claim = list(self.streams)
        while self._to_claim:
            entries = self._claim(self._to_claim.pop(0))
            if entries:
                return entries
        return self._fresh(wait)

    def _own(self) -> list[usage.Pending]:
        """Up to a batch of what this name was given before and did not acknowledge; a stream is
        left out from the read that finds it has none."""
        entries: list[usage.Pending] = []
        for stream in list(self._own_first):
            if len(entries) >= self.batch_size:
                break
            found = self._read(stream, "0", self.batch_size - len(entries))
            if not found:
                self._own_first.remove(stream)
            entries += found
        return entries

    def _fresh(self, wait: bool) -> list[usage.Pending]:
        if len(self.streams) == 1:
            entries = self._read(self.streams[0], ">", self.batch_size, self.block_ms if wait else None)
        else:
            entries = self._pass(self.batch_size)
            if not entries and wait and not self.stopping:
                entries = self._read(self.streams[self._turn], ">", self.batch_size, min(self.block_ms, POLL_MS))
        if wait and entries and len(entries) < self.batch_size and self.linger > 0 and not self.stopping:
            # A batch gathers: at 2,000 events a second, 500 of them in 0.25 s.
            self._stop.wait(self.linger)
            entries += self._pass(self.batch_size - len(entries))
        return entries

    def _pass(self, count: int) -> list[usage.Pending]:
        """Up to `count` new entries from the streams in turn, without waiting. A stream with a
        backlog fills the batch before the rest are read: the next pass starts one stream on."""
        start, entries = self._turn, []
        self._turn = (start + 1) % len(self.streams)
        for offset in range(len(self.streams)):
            if len(entries) >= count:
                break
            entries += self._read(self.streams[(start + offset) % len(self.streams)], ">", count - len(entries))
        return entries

    def _claim(self, stream: str) -> list[usage.Pending]:
        """Entries of the stream that this host's consumers whose process is gone were given (at
        once), then anyone's that were read `STALE_MS` ago and never acknowledged."""
        host = socket.gethostname()
        for info in self.redis.xinfo_consumers(stream, USAGE_GROUP):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            owner, _, pid = name.rpartition(":")
            if name == self.name or owner != host or not pid.isdigit() or _alive(int(pid)):
                continue
            if not info["pending"]:
                self.redis.xgroup_delconsumer(stream, USAGE_GROUP, name)
                continue
            ids = [p["message_id"] for p in
                   self.redis.xpending_range(stream, USAGE_GROUP, "-", "+", self.batch_size + 1, consumername=name)]
            rows = self.redis.xclaim(stream, USAGE_GROUP, self.name, 0, ids[:self.batch_size])
            if len(ids) <= self.batch_size:  # all it had is ours now
                self.redis.xgroup_delconsumer(stream, USAGE_GROUP, name)
            if rows:
                log.warning("took over %d usage events of %s from %s, which is gone", len(rows), stream, name)
                return usage.pending(rows, stream)
        claimed = self.redis.xautoclaim(stream, USAGE_GROUP, self.name, min_idle_time=usage.STALE_MS, start_id="0-0",
                                        count=self.batch_size)
        return usage.pending(claimed[1], stream) if claimed else []

    def _leave(self) -> None:
        """A consumer that stops with nothing pending in a stream leaves its group there (its name
        would only pile up)."""
        for stream in self.streams:
            try:
                for info in self.redis.xinfo_consumers(stream, USAGE_GROUP):
                    name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
                    if name == self.name and not info["pending"]:
                        self.redis.xgroup_delconsumer(stream, USAGE_GROUP, self.name)
            except Exception:  # tidying only: a name left behind is removed by the next consumer of this host
                log.debug("could not leave the usage group of %s", stream, exc_info=True)


__all__ = ["BLOCK_MS", "POLL_MS", "Consumer", "Totals"]
