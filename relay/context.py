"""Per-request state and the response type the pipeline hands back to the server."""
from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable

import orjson

from relay.client_ip import Network, client_address
from relay.errors import RelayError
from relay.keys import KeyView
from relay.snapshot import IPAddress

if TYPE_CHECKING:
    from wsgiref.types import WSGIEnvironment


def request_id_at(started: float, random_bits: int) -> str:
    """`req_` and 24 hex digits: the millisecond the request started (48 bits), then 48 random bits.
    Time first, so that requests written together sit together in every index on their id: the request
    logs' and the ledger's unique indexes take each ingested batch near their end instead of on pages
    all over the tree (which every commit would rewrite)."""
    return f"req_{int(started * 1000) & 0xFFFF_FFFF_FFFF:012x}{random_bits & 0xFFFF_FFFF_FFFF:012x}"


def new_request_id() -> str:
    return request_id_at(time.time(), int.from_bytes(os.urandom(6), "big"))


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
    output_cap: int | None = None  # output tokens per choice the relay told the upstream, when it set or lowered them
    queued_ms: int = 0  # time spent in the capacity queue before admission (relay/capacity_queue.py)

    def ip_address(self) -> IPAddress | None:
        return _parse_ip(self.client_ip) if self.client_ip else None

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started_mono) * 1000)

    def note(self, **entry: Any) -> None:
        self.trace.append(entry)


@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress | None:
    """Parsed once per address: the same callers come back, and parsing costs more than the lookup."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddresses:
    """The client's address from the peer and its forwarding headers (relay/client_ip.py), remembered
    per combination: the same proxies and clients come back, and walking the headers costs more than
    the lookup. With no trusted proxies the peer is the client and nothing is looked at."""

    MAX_ENTRIES = 4096
    MAX_KEY_CHARS = 256  # longer headers are walked every time rather than kept

    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self.trusted = trusted
        self.known: dict[tuple[str, str | None, str | None], str] = {}

    def of(self, environ: WSGIEnvironment) -> str | None:
        peer: str | None = environ.get("REMOTE_ADDR")
        if not self.trusted or not peer:
            return peer
        forwarded_for: str | None
        forwarded: str | None
        forwarded_for, forwarded = environ.get("HTTP_X_FORWARDED_FOR"), environ.get("HTTP_FORWARDED")
        key = (peer, forwarded_for, forwarded)
        found = self.known.get(key)
        if found is None:
            found = client_address(peer, forwarded_for, forwarded, self.trusted)
            if len(forwarded_for or "") + len(forwarded or "") <= self.MAX_KEY_CHARS:
                if len(self.known) >= self.MAX_ENTRIES:
                    self.known.clear()
                self.known[key] = found
        return found


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
