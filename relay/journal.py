"""Settles that Redis could not take, kept on local disk until it can.

A request whose answer was delivered must be billed even when Redis is down at the moment it
settles. The settle is then appended to this process's journal (one JSON line, fsynced, in
`<instance>/journal/settle-<pid>.jsonl`, 0600) and replayed when Redis answers again: by the process
itself every few seconds, and at start-up for the journals of processes that died (a journal's
owner holds an exclusive lock on it while it lives).

Replaying is idempotent by request id. While the hold's record is in Redis, the replay is the
ordinary settle script (which deletes the record, so it runs once). That includes a hold the sweeper
released meanwhile: its record is kept, holding nothing, so the settle charges only what the balance
has room for by then (relay/quota.py). When the record is gone — the first settle did run and only
its reply was lost, or Redis lost the hold in a restart — the usage event is queued marked `unheld`:
ingestion writes it once (request ids are unique in SQL) and only a first write moves the live
balance (workers/usage.py), so nothing is charged twice; unchecked by any hold, it is charged only
as far as the account's balance has room (workers/usage_writes.py).

The journal also keeps admissions whose reply was lost (`Abandoned`): Redis may have made the hold,
the caller was refused, and nobody will settle it; the replay releases it, uncharged.
"""
from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import Any, Callable

import orjson

from relay import idempotency, quota
from relay.limits import GIVE_BACK_SLOT_LUA
from relay.quota import Hold
from relay.redis_keys import money_bucket

log = logging.getLogger(__name__)

PREFIX = "settle-"
SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One settle as the relay meant it: the hold it releases, the amount it charges, its usage event."""

    hold: Hold
    cost: int
    event: bytes

    def encode(self) -> bytes:
        h = self.hold
        return orjson.dumps({"rid": h.request_id, "acct": h.account_id, "key": h.key_id, "amt": h.amount, "win": list(h.windows),
                             "res": list(h.reserved), "cost": self.cost, "event": self.event.decode()}) + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> "JournalEntry":
        return cls.of(orjson.loads(line))

    @classmethod
    def of(cls, d: dict[str, Any]) -> "JournalEntry":
        hold = Hold(d["rid"], int(d["acct"]), int(d["key"]), int(d["amt"]), tuple(d["win"]), tuple(bool(r) for r in d["res"]))
        return cls(hold, int(d["cost"]), d["event"].encode())


@dataclass(frozen=True, slots=True)
class Abandoned:
    """An admission whose reply never came (relay/resp.py `ReplyLost`): the caller was refused, and
    the hold Redis may have made for it is released uncharged rather than left to its expiry."""

    request_id: str
    account_id: int  # names the bucket its hold would be in
    claim: str = ""  # the idempotency record it may have marked in progress (its Redis name), released with the hold
    # The concurrency slots it may have taken (the lease sets' Redis names: the caller's scopes and
    # its plan's channels and keys, at most MAX_ROUTES + a few), given back with the hold.
    leases: tuple[str, ...] = ()

    def encode(self) -> bytes:
        line: dict[str, Any] = {"rid": self.request_id, "acct": self.account_id, "abandoned": True}
        if self.claim:
            line["claim"] = self.claim
        if self.leases:
            line["leases"] = list(self.leases)
        return orjson.dumps(line) + b"\n"


Line = JournalEntry | Abandoned


def decode_line(line: bytes) -> Line:
    d = orjson.loads(line)
    if d.get("abandoned"):
        # Lines written before holds were kept by bucket name no account: bucket 0, the only one then.
        leases = d.get("leases")
        named = tuple(k for k in leases if isinstance(k, str)) if isinstance(leases, list) else ()  # a bad list costs the slots only
        return Abandoned(str(d["rid"]), int(d.get("acct") or 0), str(d.get("claim") or ""), named)
    return JournalEntry.of(d)


# The ordinary settle while the hold exists; otherwise the event alone, marked for ingestion to charge.
_REPLAY = quota.SETTLE_FUNCTION + r"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return money_settle(KEYS, ARGV)
end
redis.call('XADD', KEYS[3], '*', 'e', ARGV[3], 'unheld', ARGV[2])
return -2
"""


class SettleJournal:
    def __init__(self, directory: Path, pid: int | None = None):
        self.directory = directory
        self.path = directory / f"{PREFIX}{pid or os.getpid()}{SUFFIX}"
        # The journal being replayed, moved aside (still locked by its open file) so that lines
        # appended meanwhile go to a new journal instead of being emptied with it.
        self.aside_path = directory / f"{PREFIX}{pid or os.getpid()}-replaying{SUFFIX}"
        self._file: FileIO | None = None
        self._aside: FileIO | None = None

    def _open(self) -> FileIO:
        if self._file is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while this process lives
            self._file = os.fdopen(fd, "ab", buffering=0)
        return self._file

    def append(self, entry: Line) -> None:
        """Durably: the line is on disk before this returns."""
        handle = self._open()
        handle.write(entry.encode())
        os.fsync(handle.fileno())

    def pending(self) -> bool:
        return self._file is not None and self.path.exists() and self.path.stat().st_size > 0

    def replay_own(self, apply: Callable[[Line], None]) -> int:
        """Apply this process's journal; on success it is removed. Raises when Redis still fails (the
        entries stay for the next try). A replay waits on Redis, and meanwhile requests may journal
        more: the journal is moved aside before it is read (nothing yields in between), so those
        lines start a new one, replayed in turn."""
        done = 0
        while True:
            aside = self._aside
            if aside is None:
                if self._file is None or not self.pending():
                    return done
                aside, self._file = self._file, None
                self._aside = aside
                os.rename(self.path, self.aside_path)
            done += _apply_file(self.aside_path, apply)
            self.aside_path.unlink()
            self._aside = None
            aside.close()

    def replay_orphans(self, apply: Callable[[Line], None]) -> int:
        """Apply and remove the journals of processes that are gone (their lock is free)."""
        if not self.directory.is_dir():
            return 0
        done = 0
        for path in sorted(self.directory.glob(f"{PREFIX}*{SUFFIX}")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its owner is alive and replays it itself
                os.close(fd)
                continue
            try:
                done += _apply_file(path, apply)
                path.unlink()
            finally:
                os.close(fd)
        return done


def _apply_file(path: Path, apply: Callable[[Line], None]) -> int:
    done = 0
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            entry = decode_line(line)
        except (ValueError, KeyError, TypeError, AttributeError):
            # A line cut short by a crash mid-write: the settle it began was never acknowledged.
            log.error("unreadable settle journal line in %s skipped: %r", path, line[:200])
            continue
        apply(entry)
        done += 1
    return done


class Replayer:
    """Applies journal entries to Redis: a settle with the replay script, an abandoned admission
    with the release of its hold (`release`: relay/quota.py `Quota.release`)."""

    def __init__(self, register: Callable[[str], Callable[..., Any]], release: Callable[[int, str], bool]):
        self._script = register(_REPLAY)
        self._release = release
        self._finish_claim = register(idempotency.FINISH_LUA)
        self._give_back_slot = register(GIVE_BACK_SLOT_LUA)

    def __call__(self, entry: Line) -> None:
        if isinstance(entry, Abandoned):
            if self._release(money_bucket(entry.account_id), entry.request_id):
                log.warning("released the hold of %s, whose admission reply was lost", entry.request_id)
            if entry.claim:
                # A retry under the same Idempotency-Key runs again now rather than reading "in
                # progress" until the mark expires; a mark that belongs to a later request stays.
                self._finish_claim(keys=[entry.claim], args=[entry.request_id, "release"])
            for lease in entry.leases:  # one call each: under a cluster each set is in its scope's slot
                self._give_back_slot(keys=[lease], args=[entry.request_id])
            return
        keys, args = quota.settle_call(entry.hold, entry.cost, entry.event)
        self._script(keys=keys, args=args)
