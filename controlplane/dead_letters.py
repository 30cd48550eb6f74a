"""Usage events that ingestion could not write: the dead-letter stream in Redis.

Ingestion moves an event here, with the error the database (or the event check) gave, in the same
Redis transaction that acknowledges it on its usage stream, so an event is always in exactly one of
the two. (With the money spread over a Redis Cluster's buckets the dead-letter stream is in another
slot than the usage streams and no transaction spans both: a move adds to one stream before it deletes from the other, so a crash
between the two leaves the event in both, never in neither; ingestion skips a request already in
SQL.) Each is a request the relay already charged to the live balance, so the stream is never
trimmed: operators retry (the event goes back to the usage stream of its account's bucket) or
discard it from the console or the admin API, and reconcile counts what waits here as charges not
yet in SQL.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from relay import redis_keys
from relay.usage import USAGE_STREAMS, UsageEvent

DEAD_STREAM = redis_keys.USAGE_DEAD
ERROR_LIMIT = 2_000  # characters of the error kept with an event
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")

# Moves one dead letter back to the usage stream as the relay wrote it (with its try count), in one
# step: a double click or two operators cannot queue it twice. On one server only: there is one usage
# stream, and it is in the same (only) slot as the dead letters.
_REQUEUE = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields, copy = found[1][2], {}
for i = 1, #fields, 2 do
  local name = fields[i]
  if name ~= 'error' and name ~= 'at' and name ~= 'src' then
    copy[#copy + 1] = name
    copy[#copy + 1] = fields[i + 1]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(copy))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


META = (b"error", b"at", b"n", b"src")  # what the dead-letter stream adds to the usage stream's fields


@dataclass(frozen=True)
class DeadLetter:
    id: str  # its id in the dead-letter stream
    fields: dict  # the usage-stream entry as the relay wrote it: the event (`e`) and what settle added
    error: str
    at: float  # when it was dead-lettered (Unix time)
    attempts: int  # how many times ingestion tried it
    source_id: str  # its id in the usage stream

    @property
    def raw(self) -> bytes:
        return self.fields.get(b"e", b"")

    @property
    def event(self) -> UsageEvent | None:
        """The event as ingestion reads it, or None when it cannot even be decoded."""
        try:
            return UsageEvent.from_stream(self.fields)
        except Exception:  # noqa: BLE001 - whatever is wrong with it is in `error` already
            return None

    @property
    def live_charge(self) -> int:
        """What the relay took from the account's live balance for this request (an event replayed
        without its hold took nothing yet)."""
        event = self.event
        if event is None or event.unheld or type(event.account_id) is not int or type(event.cost) is not int:
            return 0
        return max(0, event.cost)

    def as_dict(self) -> dict:
        event = self.event
        return {
            "id": self.id, "error": self.error, "dead_lettered_at": self.at, "attempts": self.attempts, "source_id": self.source_id,
            "request_id": event.request_id if event else None, "account_id": event.account_id if event else None,
            "api_key_id": event.api_key_id if event else None, "model": event.model if event else None,
            "endpoint": event.endpoint if event else None, "status": event.status if event else None,
            "cost_micro_usd": event.cost if event else None, "started_at": event.started_at if event else None,
            "live_balance_charged_micro_usd": self.live_charge,
            "event": self.raw.decode("utf-8", "replace"),
        }


def valid_id(entry_id: str) -> bool:
    return bool(_ENTRY_ID.fullmatch(entry_id or ""))


def entry_fields(fields: dict, error: str, attempts: int, source_id: str, at: float | None = None) -> dict:
    """The dead-letter entry for one usage-stream entry (ingestion adds it inside its own transaction)."""
    kept = {k: v for k, v in fields.items() if k not in META}
    return {**kept, b"error": error[:ERROR_LIMIT], b"at": repr(at if at is not None else time.time()), b"n": attempts, b"src": source_id}


def _letter(entry_id: bytes, fields: dict) -> DeadLetter:
    meta = {k.decode(): fields[k].decode("utf-8", "replace") for k in META if k in fields}
    return DeadLetter(id=entry_id.decode(), fields={k: v for k, v in fields.items() if k not in META}, error=meta.get("error", ""),
                      at=float(meta.get("at") or 0), attempts=int(meta.get("n") or 1), source_id=meta.get("src", ""))


def count(redis) -> int:
    return int(redis.xlen(DEAD_STREAM))


def newest(redis, before: str | None = None, limit: int = 50) -> tuple[list[DeadLetter], str | None]:
    """A page of dead letters, newest first, and the id to continue from (None at the end)."""
    top = f"({before}" if before and valid_id(before) else "+"
    rows = redis.xrevrange(DEAD_STREAM, max=top, min="-", count=limit + 1)
    letters = [_letter(i, f) for i, f in rows[:limit]]
    return letters, (letters[-1].id if len(rows) > limit else None)


def get(redis, entry_id: str) -> DeadLetter | None:
    if not valid_id(entry_id):
        return None
    rows = redis.xrange(DEAD_STREAM, min=entry_id, max=entry_id)
    return _letter(*rows[0]) if rows else None


def requeue(redis, entry_id: str) -> bool:
    """Put a dead letter back on the usage stream of its account's bucket; False when it is not (or
    no longer) here."""
    if not valid_id(entry_id):
        return False
    if redis_keys.SPREAD:
        return _requeue_across_slots(redis, entry_id)
    return bool(redis.register_script(_REQUEUE)(keys=[DEAD_STREAM, USAGE_STREAMS[0]], args=[entry_id]))


def _bucket(letter: DeadLetter) -> int:
    """The money bucket of the letter's account. An event that names none (or cannot be read) moves
    no account's money: any stream will do, and it goes to the first."""
    event = letter.event
    account_id = event.account_id if event is not None else None
    return redis_keys.money_bucket(account_id) if type(account_id) is int else 0


def _requeue_across_slots(redis, entry_id: str) -> bool:
    """With the money spread over buckets (Redis Cluster): add to the bucket's usage stream, then delete the dead letter. A crash (or
    a second operator) in between queues the event twice; ingestion writes a request once."""
    letter = get(redis, entry_id)
    if letter is None:
        return False
    redis.xadd(redis_keys.usage_stream(_bucket(letter)), {**letter.fields, b"n": letter.attempts})  # with its try count
    redis.xdel(DEAD_STREAM, entry_id)
    return True


def remove(redis, entry_id: str) -> bool:
    """Delete a dead letter; False when someone else retried or discarded it first."""
    return valid_id(entry_id) and redis.xdel(DEAD_STREAM, entry_id) == 1


def charges(redis, counted: set[str] | None = None) -> dict[int, int]:
    """Per account, what the waiting dead letters charged the live balance but not SQL: once per
    request, skipping requests in `counted` (and adding those it counts). With the money spread over
    buckets a crash mid-move can leave one event in a usage stream and here, or here twice."""
    counted = set() if counted is None else counted
    pending: dict[int, int] = {}
    for entry_id, fields in redis.xrange(DEAD_STREAM):
        letter = _letter(entry_id, fields)
        charge, event = letter.live_charge, letter.event
        if charge and event is not None and event.request_id not in counted:
            counted.add(event.request_id)
            pending[event.account_id] = pending.get(event.account_id, 0) + charge
    return pending


__all__ = ["DEAD_STREAM", "DeadLetter", "charges", "count", "entry_fields", "get", "newest", "remove", "requeue", "valid_id"]
