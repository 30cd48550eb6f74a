"""Pooled keep-alive HTTP to upstream providers (urllib3 over gevent's patched sockets)."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

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

    def iter_chunks(self, idle_timeout: float):
        """Yield body bytes as they arrive; a gap longer than `idle_timeout` raises a timeout."""
        raw = self._raw
        conn = raw.connection
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.settimeout(idle_timeout)
        try:
            if raw.chunked and raw.supports_chunked_reads():
                yield from raw.read_chunked(decode_content=True)
            else:
                while True:
                    data = raw.read1(65536)
                    if not data:
                        break
                    yield data
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
                timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.first_byte),
            )
        except (HTTPError, OSError) as exc:
            raise _failure(exc) from None
        return UpstreamResponse(raw)
