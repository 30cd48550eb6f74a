"""Rows written by the bulk route are stored exactly as SQLAlchemy stores them."""
from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy.dialects import sqlite

from controlplane.bulk import json_text, utc_text
from controlplane.models.types import UTCDateTime

_STORE = UTCDateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())


def test_utc_text_is_what_a_utc_datetime_column_stores_rounded_as_fromtimestamp_rounds():
    moments = [0, 1, 1.7e9, 1_764_786_000.0000005, 1_764_786_000.9999995, 1_764_786_000.9999996, 1_764_786_059.999_999_7,
               1_764_786_000.123_456_5, 1_764_789_599.5, 253_402_300_799]
    moments += [1_764_786_000 + i * 0.000_000_1 for i in range(0, 100, 7)]
    for ts in moments:
        assert utc_text(ts) == _STORE(datetime.fromtimestamp(ts, tz=UTC)), ts


def test_json_text_reads_back_as_the_value():
    trace = [{"step": "attempt", "channel": 3, "error": "café \"quoted\""}, {"step": "stop", "why": None}]
    assert orjson.loads(json_text(trace)) == trace
