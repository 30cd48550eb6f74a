"""Reading requests off a client connection for relay/http_server.py: httptools (llhttp) parses, this
module decides what is allowed, how long a request may take to arrive, and when its body is read.

llhttp already refuses the classic smuggling shapes (`Content-Length` with `Transfer-Encoding`,
duplicate or malformed `Content-Length`, obs-fold continuation lines, bad chunk sizes, bare LF).
On top of it: HTTP/1.0 and 1.1 only, exactly one `Host`, no transfer coding but `chunked` (and none
at all from an HTTP/1.0 client), trailer fields never taken for headers, head size and header count
capped (431), and time limits on the head and the body (408).

A small body is read before the app runs. A large one, a chunked one, or one the client holds back
for `100 Continue` is read only when the app reads `wsgi.input` — the relay checks the caller's key
first, so an unauthenticated upload is refused without being received.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import httptools

from relay.edge import EdgeLimits
from relay.sockets import send_all

log = logging.getLogger(__name__)

RECV_BYTES = 65536


class Refused(Exception):
    """A request the server answers by itself (`status`, in the app's error format), then closes."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class BodyError(OSError):
    """The body cannot be read as sent (a malformed chunk); the app answers 400."""


class _Stop(Exception):
    """Parsing stops here; what follows on the connection is not read."""


class Request:
    __slots__ = (
        "body",
        "body_started",
        "complete",
        "deferred",
        "expect",
        "headers",
        "in_body",
        "keep_alive",
        "length",
        "method",
        "size",
        "skipped",
        "started",
        "url",
        "version",
    )
    # set when the head is complete (on_headers_complete)
    method: str
    version: str
    keep_alive: bool

    def __init__(self, started: float) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []  # received and not yet handed to the app
        self.size = 0  # body bytes received so far
        self.skipped = False  # declared larger than the server accepts: never read
        self.in_body = False  # the head is complete
        self.deferred = False  # the body is read when the app asks for it
        self.complete = False
        self.length: int | None = None  # declared Content-Length
        self.expect = False  # the client waits for `100 Continue` before sending the body
        self.started = started
        self.body_started = 0.0


class Reader:
    """One connection's reading side: httptools callbacks, the time limits, complete (or deferred)
    requests queued in arrival order in `ready`."""

    def __init__(self, sock: Any, limits: EdgeLimits, max_body: int, accepted: float) -> None:
        self.sock = sock
        self.limits = limits
        self.max_body = max_body
        self.parser = httptools.HttpRequestParser(self)
        self.ready: deque[Request] = deque()
        self.current: Request | None = None
        self.now = accepted
        self.first_at: float | None = accepted  # the first head's deadline counts from the accept
        self.max_head = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.head_bytes = 0
        self.fields: list[tuple[bytes, bytes]] = []  # where on_header puts a field: the head's, or trailers
        self.head_raw = 0  # bytes received while a head was incomplete (llhttp buffers a partial header)
        self.refused: Refused | None = None
        self.stopped = False  # nothing more is parsed on this connection

    # --- receiving ------------------------------------------------------------------------------
    def fill(self) -> bool:
        """Receive once, within the time limit of whatever is arriving, and parse it. False when the
        client has closed its side; TimeoutError when it was too slow."""
        if self.current is None and self.first_at is None:
            wait = self.limits.idle_timeout  # between requests on a kept-alive connection
        else:
            # Past a deadline, what has already arrived is still taken (a busy server may come late).
            wait = max(self.timeout(time.monotonic()), 0.0)
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(RECV_BYTES)
        except BlockingIOError:
            raise TimeoutError("the request did not arrive in time") from None
        if not data:
            return False
        self.now = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # raised by a callback (httptools wraps it)
            self.stopped = True
            if self.refused is None and not isinstance(exc.__context__, _Stop):
                log.error("request parsing failed", exc_info=exc.__context__)
                self.refused = Refused(400, "malformed_request", "The request could not be parsed.")
        except httptools.HttpParserUpgrade:
            self.stopped = True  # what follows is another protocol; the request itself is answered
        except httptools.HttpParserError as exc:
            self.stopped = True
            self.refused = Refused(400, "malformed_request", f"Malformed request: {exc}.")
        request = self.current
        if request is None or request.in_body:
            self.head_raw = 0
        else:
            self.head_raw += len(data)
            if self.head_raw > self.max_head + RECV_BYTES and not self.stopped:
                self.stopped = True
                self.refused = _too_large()
        return True

    def timeout(self, now: float) -> float:
        limits = self.limits
        request = self.current
        if request is None:
            if self.first_at is not None:
                return self.first_at + limits.header_timeout - now
            return limits.idle_timeout
        if not request.in_body:
            return request.started + limits.header_timeout - now
        wait = limits.body_read_timeout
        if limits.body_min_rate > 0:
            # When the average since the head falls below the minimum rate if nothing more arrives.
            due = request.body_started + max(limits.body_rate_grace, request.size / limits.body_min_rate)
            wait = min(wait, due - now)
        return wait

    # --- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.current = request = Request(self.first_at if self.first_at is not None else self.now)
        self.fields = request.headers
        self.first_at = None
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        request: Request = self.current  # type: ignore[assignment]  # httptools calls this only between on_message_begin and on_message_complete
        request.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.max_head:
            self._refuse(_too_large())

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self.fields
        fields.append((name, value))
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > self.max_head or len(fields) > self.max_headers:
            self._refuse(_too_large())

    def on_headers_complete(self) -> None:
        request: Request = self.current  # type: ignore[assignment]  # httptools calls this only between on_message_begin and on_message_complete
        parser = self.parser
        request.in_body = True
        self.fields = []  # trailer fields are counted, never believed
        request.body_started = self.now
        request.method = parser.get_method().decode("latin-1")
        request.version = version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        length: bytes | None = None
        coding: bytes | None = None
        expect: bytes | None = None
        hosts = 0
        for name, value in request.headers:
            name = name.lower()
            if name == b"content-length":
                length = value
            elif name == b"host":
                hosts += 1
            elif name == b"transfer-encoding":
                coding = value
            elif name == b"expect":
                expect = value
        if version != "1.1" and version != "1.0":
            self._refuse(Refused(505, "http_version_not_supported", "Only HTTP/1.0 and HTTP/1.1 are served."))
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            self._refuse(Refused(400, "invalid_host", "An HTTP/1.1 request carries exactly one Host header."))
        if coding is not None:
            if version == "1.0":
                self._refuse(Refused(400, "malformed_request", "Transfer-Encoding is not allowed in HTTP/1.0."))
            if coding.lower() != b"chunked":
                self._refuse(Refused(501, "unsupported_transfer_encoding", "Only the chunked transfer coding is supported."))
            self._defer(request, expect)
        elif length is not None:
            size = request.length = int(length)  # llhttp accepts digits only
            if size > self.max_body:
                # The app refuses it from the declared length (413); the body is never received.
                request.skipped = True
                self.current = None
                self.ready.append(request)
                raise _Stop()
            if size > self.limits.buffer_body_bytes or (expect is not None and size):
                self._defer(request, expect)

    def on_body(self, body: bytes) -> None:
        request: Request = self.current  # type: ignore[assignment]  # httptools calls this only between on_message_begin and on_message_complete
        request.size += len(body)
        request.body.append(body)

    def on_message_complete(self) -> None:
        request: Request = self.current  # type: ignore[assignment]  # httptools calls this only between on_message_begin and on_message_complete
        self.current = None
        request.complete = True
        if not request.deferred:
            self.ready.append(request)

    # ----------------------------------------------------------------------------------------------
    def _defer(self, request: Request, expect: bytes | None) -> None:
        request.deferred = True
        # No `100 Continue` to an HTTP/1.0 client (it cannot know it), and none before the app reads.
        request.expect = expect is not None and expect.lower() == b"100-continue" and request.version == "1.1"
        self.ready.append(request)

    def _refuse(self, refusal: Refused) -> None:
        self.refused = refusal
        raise _Stop()


def _too_large() -> Refused:
    return Refused(431, "request_header_fields_too_large", "The request head is too large or has too many header fields.")


class RequestBody:
    """`wsgi.input` for a deferred body: each read receives only what it needs, within the body's
    time limits, and sends `100 Continue` first when the client waits for it. Raises TimeoutError for
    a client too slow, ConnectionError for one that hangs up mid-body, BodyError for a malformed one.
    Never returns more than the declared length (for a chunked body: the server's limit plus one
    byte, so the app can tell it is over)."""

    def __init__(self, reader: Reader, request: Request, cap: int) -> None:
        self.reader = reader
        self.request = request
        self.left = cap
        self.rest = b""

    def read(self, size: int | None = -1) -> bytes:
        want = self.left if size is None or size < 0 else min(size, self.left)
        while len(self.rest) < want:
            if not self._gather():
                break
        return self._take(want)

    def readline(self, size: int | None = -1) -> bytes:
        limit = self.left if size is None or size < 0 else min(size, self.left)
        while self.rest.find(b"\n", 0, limit) < 0 and len(self.rest) < limit:
            if not self._gather():
                break
        end = self.rest.find(b"\n", 0, limit)
        return self._take(end + 1 if end >= 0 else limit)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while hint is None or hint < 0 or total < hint:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _take(self, n: int) -> bytes:
        data, self.rest = self.rest[:n], self.rest[n:]
        self.left -= len(data)
        return data

    def _gather(self) -> bool:
        """Move received bytes to `rest`, receiving more when there are none; False at the end."""
        request = self.request
        if not request.body:
            if request.complete:
                return False
            self._receive()
        self.rest += b"".join(request.body)
        request.body.clear()
        return True

    def _receive(self) -> None:
        reader, request = self.reader, self.request
        if request.expect:
            request.expect = False
            send_all(reader.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        while not request.body and not request.complete:
            if reader.stopped:
                refused, reader.refused = reader.refused, None  # answered by the app, not the server
                raise BodyError(refused.message if refused else "the request body could not be read")
            try:
                received = reader.fill()
            except TimeoutError:
                raise TimeoutError("the request body did not arrive in time") from None
            if not received:
                raise ConnectionResetError("the client closed the connection before the body ended")
