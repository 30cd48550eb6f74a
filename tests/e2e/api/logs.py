"""Reading what the gateway's worker wrote: a request's log row (tokens and charge) by request id,
straight from the `switchboard up` instance's SQLite database."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from tests.gateway import Gateway


@dataclass(frozen=True)
class Logged:
    status: int
    model: str
    upstream_model: str | None
    endpoint: str
    input: int
    cache_read: int
    cache_write: int
    output: int
    reasoning: int
    cost: int
    usage_source: str
    error_code: str | None


def request_log(gateway: Gateway, request_id: str, timeout: float = 20) -> Logged:
    """The request's log row once the worker has ingested it (usage is ingested every second)."""
    deadline = time.time() + timeout
    path = gateway.instance / "switchboard.db"
    while time.time() < deadline:
        with sqlite3.connect(path, timeout=10) as db:
            row = db.execute(
                "SELECT status, model, upstream_model, endpoint, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens,"
                " reasoning_tokens, cost, usage_source, error_code FROM request_logs WHERE request_id = ?", (request_id,)).fetchone()
        if row is not None:
            return Logged(*row)
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} was not logged within {timeout}s")
