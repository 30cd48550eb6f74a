"""The usage event: what the relay appends to a Redis usage stream for each finished request (the
stream of its account's money bucket: relay/redis_keys.py).

The worker that ingests the streams (workers/usage.py) turns one event into one request-log row and,
when it cost anything, one ledger entry. Fields are primitives so the event survives a restart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from relay import redis_keys

USAGE_STREAMS = redis_keys.USAGE_STREAMS  # one a bucket; ingestion reads them all
USAGE_GROUP = "ingest"  # the consumer group, on each stream


@dataclass(slots=True)
class UsageEvent:
    request_id: str
    started_at: float
    finished_at: float
    endpoint: str
    status: int
    api_key_id: int | None = None
    account_id: int | None = None
    user_id: int | None = None
    model: str | None = None
    upstream_model: str | None = None
    channel_id: int | None = None
    channel_key_id: int | None = None
    stream: bool = False
    error_code: str | None = None
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    usage_source: str = "upstream"  # upstream | local (counted by the relay)
    cost: int = 0  # µ$ charged
    held: int = 0  # µ$ that was reserved
    uncharged: int = 0  # µ$ of the cost the account could not cover (set at ingestion)
    # Replayed from a relay's settle journal after its hold was gone: the live balance was not
    # debited, so ingestion debits it when (and only when) it writes the event (relay/journal.py).
    unheld: bool = False
    latency_ms: int | None = None
    ttft_ms: int | None = None
    queue_ms: int | None = None  # waited in the capacity queue before admission (relay/capacity_queue.py)
    client_ip: str | None = None
    trace: list[Any] = field(default_factory=list)

    def encode(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises dataclasses natively, ~10× faster than asdict

    @classmethod
    def decode(cls, raw: bytes | str) -> UsageEvent:
        data = orjson.loads(raw)
        if type(data) is dict and tuple(data) == _FIELDS:
            # As `encode` wrote it: every field, in order. Positional arguments cost a quarter of keywords.
            return cls(*data.values())
        try:
            return cls(**data)
        except TypeError:  # a field this version does not know (or one missing: raised again below)
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_stream(cls, fields: dict[bytes, Any]) -> UsageEvent:
        """The event of one stream entry. The settle script adds `charged` when it had to charge
        less than the event's cost (no balance, key limit or budget may go below zero); the
        difference is kept on the event as `uncharged` and in its trace."""
        event = cls.decode(fields[b"e"])
        event.unheld = b"unheld" in fields
        charged = fields.get(b"charged")
        if charged is not None and int(charged) != event.cost:
            event.uncharged = event.cost - int(charged)
            event.trace = [*event.trace, {"step": "charge_cut", "cost": event.cost, "charged": int(charged)}]
            event.cost = int(charged)
        return event


_FIELDS = tuple(UsageEvent.__dataclass_fields__)
