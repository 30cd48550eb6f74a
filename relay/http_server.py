"""A lean HTTP/1.1 server for WSGI apps on gevent: httptools (llhttp) parses requests, responses go
out in as few writes as possible (headers with the first body piece, one write per streamed chunk).

Replaces gevent's pywsgi, whose per-request and per-chunk Python costs measured ~45 µs a request on
this machine (bench/README.md). What a request may look like, how long it may take and when its body
is read is relay/http_request.py's; the limits are relay/edge.py's. Here: connection caps (503 with
`Retry-After` past the total or the per-address cap), running the app, writing its response (chunked
to HTTP/1.1 clients, close-delimited to HTTP/1.0 ones), and closing so that the client reads the
last answer (the write side shut first, then what it still sends drained for a moment).
"""
from __future__ import annotations

import io
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import unquote_to_bytes
from wsgiref.handlers import format_date_time

import httptools
import orjson

from relay.client_ip import Network
from relay.edge import ConnectionCaps, EdgeLimits
from relay.http_request import Reader, Refused, Request, RequestBody
from relay.sockets import send_all

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from wsgiref.types import WSGIApplication, WSGIEnvironment

# start_response's (status, headers) and whether the head was sent, for one request
ResponseState = dict[str, Any]
# a response head: status line and headers, how a body piece is framed (None: no body), what ends the body, keep-alive
Head = tuple[bytes, Callable[[bytes], bytes] | None, bytes, bool]

log = logging.getLogger(__name__)

_REASONLESS = {204, 304}
_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}
# After the last answer on a connection: how long, and how much, of what the client still sends is
# read and dropped, so that closing does not reset the connection before the answer is read.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
# A connection over a cap is answered with a 503 as soon as its request line arrives (or 0.1 s pass).
REFUSED_LINGER_SECONDS = 0.5
REFUSED_HEAD_WAIT_SECONDS = 0.1  # for the request line of a connection refused over a cap

# (status, code, message, request path) -> JSON error body
ErrorRenderer = Callable[[int, str, str, str], bytes]
# While draining, how often idle connections are looked for and closed.
DRAIN_POLL_SECONDS = 0.05


class Connection:
    """One open connection: its reader, whether a request on it is being answered, its greenlet."""

    __slots__ = ("reader", "busy", "greenlet")

    def __init__(self, reader: Reader, greenlet: Any) -> None:
        self.reader = reader
        self.busy = False
        self.greenlet = greenlet


def default_error_body(status: int, code: str, message: str, path: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                                   "param": None, "code": code}})


def _no_write(data: bytes) -> NoReturn:
    raise NotImplementedError("the WSGI write() callable is not supported: return an iterable")


class HttpServer:
    def __init__(self, listener: Any, app: WSGIApplication, max_body: int = 32 * 1024 * 1024, limits: EdgeLimits | None = None,
                 trusted: tuple[Network, ...] = (), render_error: ErrorRenderer | None = None, spawn: Any = "default") -> None:
        from gevent.server import StreamServer

        self.app = app
        self.max_body = max_body
        self.limits = limits = limits or EdgeLimits()
        # Trusted proxies carry many clients' connections: only the total cap applies to them.
        self.caps = ConnectionCaps(limits.connection_cap(), limits.max_connections_per_ip, trusted)
        self.render_error = render_error or default_error_body
        self.server = StreamServer(listener, self.handle, spawn=spawn)
        self._date = (0, "")
        self.connections: dict[Any, Connection] = {}
        self.in_flight = 0  # requests being answered now
        self.draining = False
        from gevent.event import Event

        self._done = Event()  # what serve_forever waits on: set by stop() or at the end of drain()

    # the parts of gevent's server API the launchers use
    def init_socket(self) -> None:
        self.server.init_socket()

    def serve_forever(self) -> None:
        """Serve until `stop()`, or until `drain()` has finished."""
        self.server.start()
        self._done.wait()

    def stop(self, timeout: float | None = None) -> None:
        """Stop at once: requests in flight are left to end as they will (the process exits)."""
        self.server.stop(timeout)
        self._done.set()

    def drain(self, seconds: float) -> bool:
        """Stop accepting (the listening socket closed, so with every process's copy closed new
        connections are refused), close idle connections, let requests and streams in flight finish
        for up to `seconds` (their answers say `Connection: close`), then cut what is left: each cut
        request settles for what it delivered (its body's `close()`). Ends `serve_forever`.
        True when nothing had to be cut."""
        import gevent

        self.draining = True
        self.server.close()
        deadline = time.monotonic() + seconds
        while self.connections and time.monotonic() < deadline:
            for sock, connection in list(self.connections.items()):
                if not connection.busy and connection.reader.current is None:
                    try:
                        sock.shutdown(socket.SHUT_RD)  # its reader sees the end and the handler closes it
                    except OSError:
                        pass
            gevent.sleep(DRAIN_POLL_SECONDS)
        cut = [connection.greenlet for connection in self.connections.values()]
        if cut:
            log.warning("drain deadline (%g s) passed: cutting %d connection(s)", seconds, len(cut))
            gevent.killall(cut, timeout=10)
        self._done.set()
        return not cut

    @property
    def address(self) -> Any:
        return self.server.address

    def handle(self, sock: Any, address: Any) -> None:
        peer = address[0] if isinstance(address, tuple) else ""
        admitted, counted = self.caps.admit(peer)
        try:
            if not admitted:
                self._refuse_connection(sock)
                return
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # unix sockets
            import gevent

            reader = Reader(sock, self.limits, self.max_body, time.monotonic())
            connection = self.connections[sock] = Connection(reader, gevent.getcurrent())
            if self._serve(sock, reader, peer, connection):
                _linger(sock, LINGER_SECONDS)
        finally:
            self.connections.pop(sock, None)
            if admitted:
                self.caps.release(counted)
            try:
                sock.close()
            except OSError:
                pass

    def _serve(self, sock: Any, reader: Reader, peer: str, connection: Connection) -> bool:
        """Answer requests until the connection ends; True when the server ends it after an answer
        (the client may still be sending)."""
        while True:
            try:
                if not reader.fill():
                    return False
            except TimeoutError:
                if reader.current is None:
                    return False  # nothing of a request arrived: close quietly
                self._error(sock, Refused(408, "request_timeout", "The request did not arrive in time."), reader.current)
                return True
            except OSError:
                return False
            while reader.ready:
                connection.busy = True
                self.in_flight += 1
                try:
                    if not self._respond(sock, reader, reader.ready.popleft(), peer):
                        return True
                finally:
                    connection.busy = False
                    self.in_flight -= 1
                if self.draining:
                    return True
            if reader.refused is not None:
                self._error(sock, reader.refused, reader.current)
                return True
            if reader.stopped:
                return True

    def _error(self, sock: Any, refusal: Refused, request: Request | None, extra: bytes = b"") -> None:
        """An answer of the server's own, in the app's error format, on a connection about to close."""
        path = _path_of(request.url) if request is not None else ""
        body = self.render_error(refusal.status, refusal.code, refusal.message, path)
        head = (f"HTTP/1.1 {refusal.status} {_REASONS.get(refusal.status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nDate: {self._http_date()}\r\nConnection: close\r\n").encode("latin-1")
        try:
            send_all(sock, head + extra + b"\r\n" + body)
        except OSError:
            pass

    def _refuse_connection(self, sock: Any) -> None:
        """503 to a connection over a cap, in the format of the request line's path. The line is
        waited for briefly: a client's first bytes often land just after its connection is accepted,
        and this greenlet lingers on the socket anyway."""
        request = None
        try:
            sock.settimeout(REFUSED_HEAD_WAIT_SECONDS)
            data = sock.recv(65536)
            line = data.split(b"\r\n", 1)[0].split(b" ")
            if len(line) == 3:
                request = Request(0.0)
                request.url = line[1]
        except OSError:
            pass
        sock.settimeout(REFUSED_LINGER_SECONDS)
        refusal = Refused(503, "too_many_connections", "The server has too many open connections; retry shortly.")
        self._error(sock, refusal, request, b"Retry-After: 1\r\n")
        _linger(sock, REFUSED_LINGER_SECONDS)

    def _http_date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, format_date_time(now))
        return self._date[1]

    def environ(self, request: Request, peer: str, reader: Reader) -> WSGIEnvironment:
        url = httptools.parse_url(request.url)
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
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if request.deferred:
            if request.length is None:  # chunked: the input ends where the body does
                env["wsgi.input"] = RequestBody(reader, request, self.max_body + 1)
                env["wsgi.input_terminated"] = True
            else:
                env["wsgi.input"] = RequestBody(reader, request, request.length)
                env["CONTENT_LENGTH"] = str(request.length)
        elif request.skipped:
            env["wsgi.input"] = io.BytesIO(b"")
            env["CONTENT_LENGTH"] = str(request.length)  # the app answers 413 from the declared length
        else:
            body = b"".join(request.body)
            env["wsgi.input"] = io.BytesIO(body)
            env["CONTENT_LENGTH"] = str(len(body))
        for name, value in request.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            if key == "CONTENT_TYPE":
                env["CONTENT_TYPE"] = text
            elif key != "CONTENT_LENGTH" and key != "TRANSFER_ENCODING":
                key = "HTTP_" + key
                env[key] = env[key] + "," + text if key in env else text
        return env

    def _respond(self, sock: Any, reader: Reader, request: Request, peer: str) -> bool:
        """Run the app for one request and write its response; False when the connection must close."""
        state: ResponseState = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
            if exc_info is not None and state.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])  # type: ignore[union-attr]  # an app passes a caught exception's triple
            state["status"], state["headers"] = status, headers
            return _no_write

        try:
            result = self.app(self.environ(request, peer, reader), start_response)
        except Exception:
            log.exception("WSGI app failed for %s %s", request.method, request.url[:200])
            try:
                send_all(sock, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            return False
        # The connection carries on only if this request was read to its end (a refused upload's
        # body was not) and nothing after it was malformed.
        keep = request.keep_alive and request.complete and not reader.stopped and not self.draining
        sock.settimeout(self.limits.idle_timeout)  # a caller that takes nothing for this long is gone
        try:
            keep = self._write(sock, request, state, result, keep)
        except OSError:
            keep = False  # the client went away mid-response
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return keep

    def _write(self, sock: Any, request: Request, state: ResponseState, result: Iterable[bytes], keep: bool) -> bool:
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

    def _head(self, request: Request, state: ResponseState, keep: bool) -> Head:
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
        elif request.version == "1.0":
            lines.append("Connection: keep-alive\r\n")  # an HTTP/1.0 client that asked for it
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


def _path_of(url: bytes) -> str:
    return url.split(b"?", 1)[0].decode("latin-1")


def _linger(sock: Any, seconds: float) -> None:
    """Close the write side, then drop what the client still sends for a moment: closing with unread
    bytes would reset the connection, and the client could lose the answer it has not yet read."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        dropped = 0
        while dropped < LINGER_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                return
            dropped += len(data)
    except OSError:
        pass
