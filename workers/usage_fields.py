"""What a usage event may hold before it reaches SQL.

Text is cut to its column's length (read from the model, so the limit cannot drift from the schema),
numbers must fit their column, and the decision trace is bounded. PostgreSQL refuses an over-long
`varchar` or an out-of-range `integer` where SQLite stores anything; checking here makes both back ends
take or refuse the same events. An event that cannot be made valid raises `InvalidEvent`, and ingestion
dead-letters it instead of offering it to the database.
"""
from __future__ import annotations

import math

import orjson
from sqlalchemy import BigInteger

from controlplane.models import RequestLog
from relay.usage import UsageEvent

TRACE_ENTRIES = 32  # steps kept from a request's decision trace (a request makes a handful)
TRACE_BYTES = 8_192  # JSON size of the kept trace
LATEST = 253_402_300_799  # 9999-12-31T23:59:59Z: the last moment a SQL timestamp holds

_COLUMNS = RequestLog.__table__.c
TEXT_LIMITS = {name: _COLUMNS[name].type.length for name in
               ("model", "upstream_model", "endpoint", "error_code", "usage_source", "client_ip")}
REQUEST_ID_LIMIT = _COLUMNS["request_id"].type.length
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
# Counts and ids are non-negative and sized by their column; `cost` and `held` are µ$ in 64 bits.
INT_LIMITS = {name: (_INT64 if isinstance(_COLUMNS[name].type, BigInteger) else _INT32) for name in
              ("status", "api_key_id", "account_id", "user_id", "channel_id", "channel_key_id", "input_tokens",
               "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost", "latency_ms", "ttft_ms", "queue_ms")}
INT_LIMITS["held"] = _INT64
REQUIRED = {"status", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost", "held"}
_INTS = tuple((name, limit, name in REQUIRED) for name, limit in INT_LIMITS.items())
_TEXTS = tuple(TEXT_LIMITS.items())


class InvalidEvent(ValueError):
    """The event cannot be stored as it is; the message says which field and why."""


def _ints(event: UsageEvent) -> None:
    for name, limit, required in _INTS:
        value = getattr(event, name)
        if type(value) is int and 0 <= value <= limit:  # nearly every value: decided in one test
            continue
        if value is None and not required:
            continue
        if type(value) is not int:
            raise InvalidEvent(f"{name} must be an integer, got {type(value).__name__}")
        if not 0 <= value <= limit:
            raise InvalidEvent(f"{name} {value} is outside 0..{limit}")


def _text(event: UsageEvent, name: str, limit: int) -> None:
    value = getattr(event, name)
    if value is None:
        if name in ("endpoint", "usage_source"):
            raise InvalidEvent(f"{name} is missing")
        return
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} must be text, got {type(value).__name__}")
    if len(value) > limit:
        setattr(event, name, value[:limit])


def _moment(event: UsageEvent, name: str) -> None:
    value = getattr(event, name)
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= LATEST:
        raise InvalidEvent(f"{name} must be a Unix time, got {value!r:.40}")


def bounded_trace(trace, event_bytes: int | None = None) -> list:
    """The first steps of the trace that fit, and a note of how many were left out. `event_bytes`, the
    size of the whole encoded event, spares measuring a trace that must fit."""
    if not isinstance(trace, list):
        raise InvalidEvent(f"trace must be a list, got {type(trace).__name__}")
    if len(trace) <= TRACE_ENTRIES and (event_bytes or len(orjson.dumps(trace))) <= TRACE_BYTES:
        return trace
    kept, size = [], 0
    for step in trace[:TRACE_ENTRIES]:
        size += len(orjson.dumps(step)) + 1
        if size > TRACE_BYTES - 64:  # room for the note
            break
        kept.append(step)
    kept.append({"step": "truncated", "left_out": len(trace) - len(kept)})
    return kept


def check(event: UsageEvent, event_bytes: int | None = None) -> UsageEvent:
    """Bound `event` in place (text cut, trace shortened) or raise `InvalidEvent`."""
    rid = event.request_id
    if not isinstance(rid, str) or not 0 < len(rid) <= REQUEST_ID_LIMIT:
        # Cutting a request id could make two requests one; such an event is refused, not shortened.
        raise InvalidEvent(f"request_id must be 1..{REQUEST_ID_LIMIT} characters of text")
    for name, limit in _TEXTS:
        value = getattr(event, name)
        if type(value) is not str or len(value) > limit:  # the usual short text passes here
            _text(event, name, limit)
    _ints(event)
    _moment(event, "started_at")
    _moment(event, "finished_at")
    if type(event.stream) is not bool:
        raise InvalidEvent("stream must be true or false")
    event.trace = bounded_trace(event.trace, event_bytes)
    return event


def parse(fields: dict) -> UsageEvent:
    """Read and check one stream entry's event, or raise `InvalidEvent`."""
    raw = fields[b"e"]
    try:
        event = UsageEvent.from_stream(fields)
    except (orjson.JSONDecodeError, TypeError, AttributeError, ValueError) as error:
        raise InvalidEvent(f"unreadable event: {error}") from None
    return check(event, len(raw))


__all__ = ["TEXT_LIMITS", "TRACE_BYTES", "TRACE_ENTRIES", "InvalidEvent", "bounded_trace", "check", "parse"]
