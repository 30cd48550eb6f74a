"""Per-request state and the response type the pipeline hands back to the server."""
from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

import orjson

from relay.errors import RelayError
from relay.settings import Timeouts
from relay.snapshot import KeyView


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: Iterable[bytes]


JSON_HEADERS = [("Content-Type", "application/json")]
SSE_HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
]


def json_response(status: int, body: bytes, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = JSON_HEADERS + [("Content-Length", str(len(body)))]
    if extra:
        headers = headers + extra
    return Response(status, headers, [body])


def error_response(error: RelayError, request_id: str) -> Response:
    extra = [("Retry-After", str(max(1, int(round(error.retry_after)))))] if error.retry_after else None
    return json_response(error.status, error.openai_body(request_id), extra)


@dataclass(slots=True)
class RequestContext:
    """What one request has learned so far; becomes its usage event at the end."""

    request_id: str
    endpoint: str
    client_ip: str | None
    started_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    key: KeyView | None = None
    model: str | None = None
    upstream_model: str | None = None
    channel_id: int | None = None
    channel_key_id: int | None = None
    stream: bool = False
    held: bool = False  # a hold exists: its settlement logs the request
    ttft_ms: int | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    timeouts: Timeouts | None = None  # the current attempt's upstream time limits (its channel's)
    output_cap: int | None = None  # output tokens per choice the relay told the upstream, when it set or lowered them

    def ip_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        return _parse_ip(self.client_ip) if self.client_ip else None

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started_mono) * 1000)

    def note(self, **entry: Any) -> None:
        self.trace.append(entry)


@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parsed once per address: the same callers come back, and parsing costs more than the lookup."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
