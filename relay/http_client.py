"""A small keep-alive HTTP/1.1 client for the relay's upstream calls.

Pooled sockets per origin, the request written in one send, the response parsed by llhttp (the C
parser geventhttpclient ships), and body bytes handed over exactly as they arrive — what SSE needs.
Measured on this machine: ~60 µs of CPU per request where urllib3 spent ~200 µs (bench/README.md).
Works on gevent's patched sockets in the relay and on plain sockets elsewhere (probes, tests).
"""
from __future__ import annotations

import socket
import ssl
import time
import zlib
from collections import deque
from functools import lru_cache
from typing import Any, Iterator
from urllib.parse import urlsplit

from geventhttpclient.response import HTTPResponse

from relay.egress import SCHEMES, Egress
from relay.sockets import raw_socket, send_all


class ConnectFailed(OSError):
    """The TCP (or TLS) connection could not be made."""


class ConnectionClosed(OSError):
    """The upstream closed the connection before the response was complete."""


class ResponseTooLarge(OSError):
    """A whole-body read passed its size limit."""


class _Parser(HTTPResponse):
    """llhttp's callbacks, keeping body bytes as a list of pieces in arrival order."""

    def __init__(self, method: str):
        super().__init__(method)
        self.pieces: list[bytes] = []
        self.fed = False

    def _on_body(self, buf: bytearray) -> None:
        self.pieces.append(bytes(buf))

    def take(self) -> bytes:
        data = b"".join(self.pieces) if len(self.pieces) != 1 else self.pieces[0]
        self.pieces.clear()
        return data


Origin = tuple[str, str, int]  # (scheme, host, port)


@lru_cache(maxsize=4096)
def _target(url: str) -> tuple[Origin, str, str]:
    """(origin, request target, Host header) of a URL, parsed once per distinct URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname or ""
    default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default else f":{port}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), path, host_header


def _decoder(headers: Any) -> zlib._Decompress | None:
    encoding = (headers.get("content-encoding") or "").lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None


class Exchange:
    """One response on a pooled connection: headers read, body not yet."""

    __slots__ = ("client", "origin", "sock", "parser", "status", "headers", "_decode", "_raw", "_pending")

    def __init__(self, client: "HttpClient", origin: Origin, sock: Any, parser: _Parser) -> None:
        self.client, self.origin, self.sock, self.parser = client, origin, sock, parser
        self.status = parser.get_code()
        self.headers = parser.info()  # case-insensitive
        self._decode = _decoder(self.headers)

    def _recv(self, timeout: float) -> bool:
        """Read once; False when the message is complete."""
        if self.parser.message_complete:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        data = self.sock.recv(65536)
        self.parser.feed(data)  # an empty read is EOF: it completes a read-until-close body
        if not data and not self.parser.message_complete:
            raise ConnectionClosed("the upstream closed the connection mid-response")
        return True

    @property
    def complete(self) -> bool:
        return self.parser.message_complete

    def fileno(self) -> int:
        fd: int = self.sock.fileno()
        return fd

    def start_nonblocking(self) -> bool:
        """Reads from now on never wait (`read_nowait`). True when the socket is TLS, whose buffer
        may already hold bytes the socket will not announce again."""
        self.sock.settimeout(0.0)
        self._pending = getattr(self.sock, "pending", None)  # TLS only
        # A read that never waits needs nothing of gevent's socket wrapper (relay/sockets.py).
        self._raw = raw_socket(self.sock)
        return self._pending is not None

    def read_nowait(self) -> bytes | None:
        """Body bytes from one read that does not wait (after `start_nonblocking`); None when
        nothing has arrived. Raises like `_recv` when the upstream fails."""
        try:
            data = self._raw.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        parser = self.parser
        parser.feed(data)
        if not data and not parser.message_complete:
            raise ConnectionClosed("the upstream closed the connection mid-response")
        while data and self._pending is not None and self._pending():
            data = self._raw.recv(65536)
            parser.feed(data)
        return self._out(parser.take()) if parser.pieces else b""

    def _out(self, data: bytes) -> bytes:
        return self._decode.decompress(data) if self._decode is not None and data else data

    def read_all(self, timeout: float, limit: int | None = None) -> bytes:
        """The whole body; past `limit` bytes (as sent, and once decompressed) ResponseTooLarge,
        and the connection is closed."""
        size, seen = 0, 0
        try:
            while self._recv(timeout):
                if limit is not None:
                    pieces = self.parser.pieces
                    size += sum(len(p) for p in pieces[seen:])
                    seen = len(pieces)
                    if size > limit:
                        raise ResponseTooLarge(f"the response is larger than {limit} bytes")
            raw = self.parser.take()
            if limit is not None and len(raw) > limit:  # it may all have come with the headers
                raise ResponseTooLarge(f"the response is larger than {limit} bytes")
            if self._decode is None or not raw:
                body = raw
            elif limit is None:
                body = self._decode.decompress(raw)
            else:
                body = self._decode.decompress(raw, limit + 1)
                if len(body) > limit:
                    raise ResponseTooLarge(f"the response is larger than {limit} bytes once decompressed")
        except BaseException:
            self.close()
            raise
        self.finish()
        return body

    def iter_body(self, first_timeout: float, idle_timeout: float, deadline: float | None = None) -> Iterator[bytes]:
        """Body bytes as they arrive; the first may take `first_timeout`, later gaps `idle_timeout`."""
        wait = first_timeout
        try:
            while True:
                if self.parser.pieces:
                    yield self._out(self.parser.take())
                    wait = idle_timeout
                if self.parser.message_complete:
                    break
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise socket.timeout("the response exceeded its total time")
                self._recv(wait)
        except GeneratorExit:
            self.close()  # the caller stopped reading: the connection is mid-message
            raise
        except BaseException:
            self.close()
            raise
        self.finish()

    def finish(self) -> None:
        """Back to the pool when the message is complete and the connection may be kept."""
        if self.sock is not None:
            sock, self.sock = self.sock, None
            if self.parser.should_close():
                _close(sock)
            else:
                self.client.release(self.origin, sock)

    def close(self) -> None:
        if self.sock is not None:
            sock, self.sock = self.sock, None
            _close(sock)


def _close(sock: Any) -> None:
    try:
        sock.close()
    except OSError:
        pass


class HttpClient:
    """`egress` decides where new connections may go (relay/egress.py); a pooled connection was
    checked when it was made, so requests on it cost nothing more."""

    def __init__(self, pool_size: int = 256, ssl_context: ssl.SSLContext | None = None, egress: Egress | None = None):
        self.pool_size = pool_size
        self.idle: dict[Origin, deque[Any]] = {}  # idle sockets per origin
        self._ssl = ssl_context
        self.egress = egress or Egress()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _connect(self, origin: Origin, timeout: float) -> Any:
        scheme, host, port = origin
        if scheme not in SCHEMES:
            raise ConnectFailed(f"{scheme} is not http or https")
        try:
            sock = self.egress.connect(host, port, timeout)
        except OSError as error:
            raise ConnectFailed(str(error)) from error
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            try:
                sock = self._ssl_context().wrap_socket(sock, server_hostname=host)
            except (OSError, ssl.SSLError) as error:
                _close(sock)
                raise ConnectFailed(f"TLS: {error}") from error
        return sock

    def release(self, origin: Origin, sock: Any) -> None:
        idle = self.idle.setdefault(origin, deque())
        if len(idle) < self.pool_size:
            idle.append(sock)
        else:
            _close(sock)

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                connect_timeout: float, first_byte_timeout: float) -> Exchange:
        origin, target, host_header = _target(url)
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body or b'')}\r\n\r\n")
        payload = "".join(lines).encode("latin-1") + (body or b"")
        idle = self.idle.get(origin)
        # A kept-alive socket the upstream has closed meanwhile fails before any byte comes back:
        # such a request is sent again, once, on a new connection.
        while idle:
            sock = idle.pop()
            exchange = self._exchange(origin, sock, method, payload, first_byte_timeout, reused=True)
            if exchange is not None:
                return exchange
        sock = self._connect(origin, connect_timeout)
        return self._exchange(origin, sock, method, payload, first_byte_timeout, reused=False)  # type: ignore[return-value]  # None only when reused

    def _exchange(self, origin: Origin, sock: Any, method: str, payload: bytes, timeout: float, reused: bool) -> Exchange | None:
        parser = _Parser(method)
        try:
            sock.settimeout(timeout)
            send_all(sock, payload)
            while not parser.headers_complete:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionClosed("the upstream closed the connection before answering")
                parser.fed = True
                parser.feed(data)
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
            _close(sock)
            if reused and not parser.fed:
                return None
            raise
        except BaseException:
            _close(sock)
            raise
        return Exchange(self, origin, sock, parser)
