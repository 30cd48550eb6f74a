"""Pooled keep-alive HTTP to upstream providers (urllib3 over gevent's patched sockets)."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field, replace

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from relay.errors import ErrorKind, UpstreamError
from relay.settings import Timeouts
from relay.snapshot import ChannelView

_TIMEOUT_FIELDS = ("connect", "first_byte", "idle", "total")


def timeouts_for(channel: ChannelView, defaults: Timeouts) -> Timeouts:
    """The channel's own time limits (`config.timeouts`, seconds) over the relay's defaults."""
    own = channel.config.get("timeouts") if isinstance(channel.config, dict) else None
    if not isinstance(own, dict):
        return defaults
    given = {}
    for name in _TIMEOUT_FIELDS:
        value = own.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            given[name] = float(value)
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


def _failure(exc: Exception) -> UpstreamCallFailed:
    if isinstance(exc, ConnectTimeoutError):
        return UpstreamCallFailed(UpstreamError(ErrorKind.CONNECT, 0, "connect timeout"))
    if isinstance(exc, NewConnectionError):
        return UpstreamCallFailed(UpstreamError(ErrorKind.CONNECT, 0, "connection refused"))
    if isinstance(exc, (ReadTimeoutError, socket.timeout, TimeoutError)):
        return UpstreamCallFailed(UpstreamError(ErrorKind.TIMEOUT, 0, "upstream timed out"))
    if isinstance(exc, ProtocolError):
        return UpstreamCallFailed(UpstreamError(ErrorKind.TRANSIENT, 0, "connection reset by upstream"))
    return UpstreamCallFailed(UpstreamError(ErrorKind.TRANSIENT, 0, type(exc).__name__))


class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    __slots__ = ("_raw", "status", "headers")

    def __init__(self, raw: urllib3.BaseHTTPResponse):
        self._raw = raw
        self.status = raw.status
        self.headers = raw.headers

    def read_all(self) -> bytes:
        try:
            data = self._raw.read()
        except HTTPError as exc:
            self.abort()
            raise _failure(exc) from None
        self._raw.release_conn()
        return data

    def iter_chunks(self, first_timeout: float, idle_timeout: float, deadline: float | None = None):
        """Yield body bytes as they arrive. The first chunk may take `first_timeout`; after it, a gap
        longer than `idle_timeout` — or passing the monotonic `deadline` — raises a timeout."""
        raw = self._raw
        sock = getattr(raw.connection, "sock", None)

        def wait_at_most(seconds: float) -> None:
            if sock is not None:
                if deadline is not None:
                    seconds = min(seconds, max(deadline - time.monotonic(), 0.001))
                sock.settimeout(seconds)

        wait_at_most(first_timeout)
        try:
            if raw.chunked and raw.supports_chunked_reads():
                pieces = raw.read_chunked(decode_content=True)
            else:
                pieces = iter(lambda: raw.read1(65536), b"")
            for data in pieces:
                yield data
                wait_at_most(idle_timeout)
        except (HTTPError, OSError) as exc:
            self.abort()
            raise _failure(exc) from None
        raw.release_conn()

    def abort(self) -> None:
        """Close the connection instead of returning it to the pool (the body is not finished)."""
        try:
            self._raw.close()
        except Exception:
            pass
        try:
            self._raw.release_conn()
        except Exception:
            pass


class UpstreamClient:
    def __init__(self, pool_size: int = 256):
        self.pool = urllib3.PoolManager(num_pools=128, maxsize=pool_size, block=False, retries=False)

    def send(self, request: HttpRequest, timeouts: Timeouts) -> UpstreamResponse:
        try:
            raw = self.pool.urlopen(
                request.method,
                request.url,
                body=request.body,
                headers=request.headers,
                preload_content=False,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=timeouts.connect, read=min(timeouts.first_byte, timeouts.total)),
            )
        except (HTTPError, OSError) as exc:
            raise _failure(exc) from None
        return UpstreamResponse(raw)
