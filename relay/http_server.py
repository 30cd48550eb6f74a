"""A lean HTTP/1.1 server for WSGI apps on gevent: httptools (llhttp) parses requests, responses go
out in as few writes as possible (headers with the first body piece, one write per streamed chunk).

Replaces gevent's pywsgi, whose per-request and per-chunk Python costs measured ~45 µs a request on
this machine (bench/README.md). Limits: request head 64 KB, body as configured (a larger body still
reaches the app — with its length and no bytes — so the app answers 413 in its own format, and the
connection closes), 30 s between reads while a request is incomplete, 75 s idle keep-alive.
"""
from __future__ import annotations

import io
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes
from wsgiref.handlers import format_date_time

import httptools

from relay.sockets import send_all

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication, WSGIEnvironment

    from _typeshed import OptExcInfo

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
REQUEST_SECONDS = 30.0
IDLE_SECONDS = 75.0
_REASONLESS = {204, 304}


class _Stop(Exception):
    """Parsing stops here: the request is answered without reading its body, then the connection closes."""


class _Request:
    __slots__ = ("url", "headers", "body", "size", "skipped", "method", "version", "keep_alive")
    # set once the message is complete (_Reader._finish)
    method: str
    version: str
    keep_alive: bool

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.skipped = False  # the body was too large to read


class _Reader:
    """httptools callbacks: collects complete requests in arrival order."""

    def __init__(self, sock: Any, max_body: int) -> None:
        self.sock = sock
        self.max_body = max_body
        self.parser = httptools.HttpRequestParser(self)
        self.ready: deque[_Request] = deque()
        # Between on_message_begin and _finish: the callbacks in between rely on it.
        self.current: _Request | None = None
        self.head_bytes = 0
        self.head_too_large = False

    def on_message_begin(self) -> None:
        self.current = _Request()
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.current.url += url  # type: ignore[union-attr]  # inside a message
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))  # type: ignore[union-attr]  # inside a message
        self._count(len(name) + len(value))

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > MAX_HEAD:
            self.head_too_large = True
            raise _Stop("request head too large")

    def on_headers_complete(self) -> None:
        request: _Request = self.current  # type: ignore[assignment]  # inside a message
        length = next((v for k, v in request.headers if k.lower() == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body:
            request.skipped = True
            self._finish()
            raise _Stop("body over the limit")
        if any(k.lower() == b"expect" and v.lower() == b"100-continue" for k, v in request.headers):
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request: _Request = self.current  # type: ignore[assignment]  # inside a message
        request.size += len(body)
        if request.size > self.max_body:
            request.body.append(body[: max(self.max_body + 1 - (request.size - len(body)), 0)])
            request.skipped = True
            self._finish()
            raise _Stop("body over the limit")
        request.body.append(body)

    def on_message_complete(self) -> None:
        self._finish()

    def _finish(self) -> None:
        request: _Request = self.current  # type: ignore[assignment]  # inside a message
        self.current = None
        parser = self.parser
        request.method = parser.get_method().decode("latin-1")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive() and not request.skipped
        self.ready.append(request)


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the WSGI write() callable is not supported: return an iterable")


class HttpServer:
    def __init__(self, listener: Any, app: WSGIApplication, max_body: int = 32 * 1024 * 1024, spawn: Any = "default") -> None:
        from gevent.server import StreamServer

        self.app = app
        self.max_body = max_body
        self.server = StreamServer(listener, self.handle, spawn=spawn)
        self._date = (0, "")

    # the parts of gevent's server API the launchers use
    def init_socket(self) -> None:
        self.server.init_socket()

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self, timeout: float | None = None) -> None:
        self.server.stop(timeout)

    @property
    def address(self) -> Any:
        return self.server.address

    def handle(self, sock: Any, address: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # unix sockets
        reader = _Reader(sock, self.max_body)
        peer = address[0] if isinstance(address, tuple) else ""
        try:
            self._serve(sock, reader, peer)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _serve(self, sock: Any, reader: _Reader, peer: str) -> None:
        waiting = IDLE_SECONDS
        while True:
            sock.settimeout(waiting)
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            stop = False
            try:
                reader.parser.feed_data(data)
            except (_Stop, httptools.HttpParserCallbackError):
                if not reader.ready:  # the head itself was too large, or a callback failed
                    self._plain(sock, 431 if reader.head_too_large else 400)
                    return
                stop = True
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                self._plain(sock, 400)
                return
            while reader.ready:
                if not self._respond(sock, reader.ready.popleft(), peer):
                    return
            if stop:
                return
            waiting = REQUEST_SECONDS if reader.current is not None else IDLE_SECONDS

    def _plain(self, sock: Any, status: int) -> None:
        text = {400: b"400 Bad Request", 431: b"431 Request Header Fields Too Large"}[status]
        try:
            sock.sendall(b"HTTP/1.1 " + text + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass

    def _http_date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, format_date_time(now))
        return self._date[1]

    def environ(self, request: _Request, peer: str) -> WSGIEnvironment:
        url = httptools.parse_url(request.url)
        body = b"".join(request.body)
        env: WSGIEnvironment = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(url.path or b"/").decode("latin-1"),
            "QUERY_STRING": (url.query or b"").decode("latin-1"),
            "SERVER_PROTOCOL": f"HTTP/{request.version}",
            "SERVER_NAME": "switchboard",
            "SERVER_PORT": "0",
            "REMOTE_ADDR": peer,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if not request.skipped:
            env["CONTENT_LENGTH"] = str(len(body))
        for name, value in request.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            if key == "CONTENT_TYPE":
                env["CONTENT_TYPE"] = text
            elif key == "CONTENT_LENGTH":
                if request.skipped:
                    env["CONTENT_LENGTH"] = text  # the app answers 413 from the declared length
            elif key != "TRANSFER_ENCODING":
                key = "HTTP_" + key
                env[key] = env[key] + "," + text if key in env else text
        return env

    def _respond(self, sock: Any, request: _Request, peer: str) -> bool:
        """Run the app for one request and write its response; False when the connection must close."""
        state: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: OptExcInfo | None = None) -> Callable[[bytes], None]:
            if exc_info is not None and state.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])  # type: ignore[union-attr]  # given, it holds an exception (PEP 3333)
            state["status"], state["headers"] = status, headers
            return _no_write

        try:
            result = self.app(self.environ(request, peer), start_response)
        except Exception:
            log.exception("WSGI app failed for %s %s", request.method, request.url[:200])
            try:
                sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            return False
        keep = request.keep_alive
        try:
            keep = self._write(sock, request, state, result, keep)
        except OSError:
            keep = False  # the client went away mid-response
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return keep

    def _write(self, sock: Any, request: _Request, state: dict[str, Any], result: Iterable[bytes], keep: bool) -> bool:
        write_to = getattr(result, "write_to", None)
        if write_to is not None and "status" in state:
            # A body that writes itself (relay/streaming.py pumps an upstream stream from the loop).
            head, frame, last, keep = self._head(request, state, keep)
            if frame is None:
                send_all(sock, head)
            else:
                write_to(sock, head, frame, last)
            return keep
        pieces = iter(result)
        first = b""
        for first in pieces:  # start_response may come as late as the first non-empty piece
            if first:
                break
        head, frame, last, keep = self._head(request, state, keep)
        if frame is None:
            send_all(sock, head)
            for _ in pieces:
                pass
            return keep
        send_all(sock, head + frame(first) if first else head)
        for data in pieces:
            if data:
                send_all(sock, frame(data))
        if last:
            send_all(sock, last)
        return keep

    def _head(self, request: _Request, state: dict[str, Any], keep: bool) -> tuple[bytes, Callable[[bytes], bytes] | None, bytes, bool]:
        """(status line and headers, how a body piece is framed — None for no body —, what ends the
        body, whether the connection stays open)."""
        status, headers = state.get("status", "500 Internal Server Error"), state.get("headers", [])
        code = int(status[:3])
        has_length = any(k.lower() == "content-length" for k, _ in headers)
        bodiless = request.method == "HEAD" or code in _REASONLESS or code < 200
        chunked = not has_length and not bodiless and request.version == "1.1"
        if not has_length and not chunked and not bodiless:
            keep = False  # the body ends when the connection does
        lines = [f"HTTP/1.1 {status}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in headers]
        lines.append(f"Date: {self._http_date()}\r\n")
        if chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        if not keep:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        state["sent"] = True
        head = "".join(lines).encode("latin-1")
        if bodiless:
            return head, None, b"", keep
        if chunked:
            return head, _chunk, b"0\r\n\r\n", keep
        return head, _as_is, b"", keep


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _as_is(data: bytes) -> bytes:
    return data
