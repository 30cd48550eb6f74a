"""Upstream calls: the relay's HTTP requests, their time limits, and what a failure means.

The transport is relay/http_client.py (pooled keep-alive sockets, a C response parser).
"""
from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from geventhttpclient.response import HTTPParseError

from relay.errors import ErrorKind, UpstreamError
from relay.egress import Egress
from relay.http_client import ConnectFailed, ConnectionClosed, Exchange, HttpClient, ResponseTooLarge
from relay.settings import Timeouts
from relay.snapshot import ChannelView

from zlib import error as zlib_error  # noqa: E402  (a corrupt compressed body)

def timeouts_for(channel: ChannelView, defaults: Timeouts) -> Timeouts:
    """The channel's own time limits (`config.timeouts`, seconds) over the relay's defaults."""
    own = channel.config.timeouts
    if own is None:
        return defaults
    given = own.given()
    return replace(defaults, **given) if given else defaults


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


class UpstreamCallFailed(Exception):
    """No usable HTTP response arrived (connect error, timeout, reset)."""

    def __init__(self, error: UpstreamError):
        super().__init__(error.message)
        self.error = error


# What a transport failure looks like, whichever way the body is read.
TRANSPORT_ERRORS = (OSError, HTTPParseError, zlib_error)


def failure_of(exc: BaseException) -> UpstreamCallFailed:
    if isinstance(exc, ResponseTooLarge):
        return UpstreamCallFailed(UpstreamError(ErrorKind.INVALID_RESPONSE, 0, "the upstream's answer is too large"))
    if isinstance(exc, ConnectFailed):
        return UpstreamCallFailed(UpstreamError(ErrorKind.CONNECT, 0, "cannot connect to the upstream"))
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return UpstreamCallFailed(UpstreamError(ErrorKind.TIMEOUT, 0, "upstream timed out"))
    if isinstance(exc, (ConnectionClosed, ConnectionResetError, BrokenPipeError)):
        return UpstreamCallFailed(UpstreamError(ErrorKind.TRANSIENT, 0, "connection reset by upstream"))
    if isinstance(exc, HTTPParseError):
        return UpstreamCallFailed(UpstreamError(ErrorKind.INVALID_RESPONSE, 0, "the upstream's answer is not valid HTTP"))
    return UpstreamCallFailed(UpstreamError(ErrorKind.TRANSIENT, 0, type(exc).__name__))


class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    __slots__ = ("_exchange", "_read_timeout", "_limit", "status", "headers")

    def __init__(self, exchange: Exchange, read_timeout: float, limit: int | None = None):
        self._exchange = exchange
        self._read_timeout = read_timeout
        self._limit = limit
        self.status = exchange.status
        self.headers = exchange.headers

    def read_all(self) -> bytes:
        try:
            return self._exchange.read_all(self._read_timeout, self._limit)
        except TRANSPORT_ERRORS as exc:
            raise failure_of(exc) from None

    def iter_chunks(self, first_timeout: float, idle_timeout: float, deadline: float | None = None) -> Iterator[bytes]:
        """Yield body bytes as they arrive. The first chunk may take `first_timeout`; after it, a gap
        longer than `idle_timeout` — or passing the monotonic `deadline` — raises a timeout."""
        try:
            yield from self._exchange.iter_body(first_timeout, idle_timeout, deadline)
        except TRANSPORT_ERRORS as exc:
            raise failure_of(exc) from None

    @property
    def exchange(self) -> Exchange:
        """The connection itself, for reading without waiting (relay/pump.py)."""
        return self._exchange

    def finish(self) -> None:
        """The body has been read whole: the connection goes back to the pool."""
        self._exchange.finish()

    def abort(self) -> None:
        """Close the connection instead of returning it to the pool (the body is not finished)."""
        self._exchange.close()


class UpstreamClient:
    """Upstream calls through the egress guard; a whole-body read stops at `max_response_bytes`."""

    def __init__(self, pool_size: int = 256, egress: Egress | None = None, max_response_bytes: int | None = None):
        self.http = HttpClient(pool_size, egress=egress)
        self.max_response_bytes = max_response_bytes

    def send(self, request: HttpRequest, timeouts: Timeouts) -> UpstreamResponse:
        wait = min(timeouts.first_byte, timeouts.total)
        try:
            exchange = self.http.request(request.method, request.url, request.headers, request.body, timeouts.connect, wait)
        except TRANSPORT_ERRORS as exc:
            raise failure_of(exc) from None
        return UpstreamResponse(exchange, wait, self.max_response_bytes)
