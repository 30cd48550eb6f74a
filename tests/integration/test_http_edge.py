"""The relay's HTTP server under abuse, over raw sockets: request smuggling shapes refused, chunked
bodies decoded and bounded, slow heads and bodies cut off, oversized heads refused, HTTP/1.0 served
as HTTP/1.0, pipelined requests with bodies answered in order, and connection caps answered with a
clean 503. The app behind it reads bodies the way the relay does (relay.server.read_body)."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import orjson
import pytest

from relay.edge import EdgeLimits
from relay.errors import RelayError
from relay.server import edge_error, read_body

gevent = pytest.importorskip("gevent")

MAX_BODY = 4096
LIMITS = EdgeLimits(header_timeout=1.0, idle_timeout=5.0, body_read_timeout=1.0, body_min_rate=0, max_header_bytes=4096,
                    max_headers=20, buffer_body_bytes=256, max_connections=64, max_connections_per_ip=0)


def app(environ, start_response):
    """Echoes what it was given; reads the body only where asked (`/guarded` refuses without reading)."""
    path = environ["PATH_INFO"]
    if path == "/guarded":
        body = b'{"error": "no"}'
        start_response("401 Unauthorized", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return iter([b"data: 1\n\n", b"data: 2\n\n"])
    try:
        body = read_body(environ, MAX_BODY)
    except RelayError as error:
        text = error.code.encode()
        start_response(f"{error.status} Refused", [("Content-Length", str(len(text)))])
        return [text]
    text = b"%s %s %d:%s|%s" % (environ["REQUEST_METHOD"].encode(), path.encode(), len(body), body[:40],
                                  environ.get("HTTP_X_ECHO", "-").encode())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]


@contextmanager
def serving(limits: EdgeLimits = LIMITS):
    """An HttpServer in its own thread with its own gevent hub (the test process is not patched)."""
    from gevent import get_hub

    from relay.http_server import HttpServer

    box: dict = {}
    ready = threading.Event()

    def run():
        server = HttpServer(("127.0.0.1", 0), app, max_body=MAX_BODY, limits=limits, render_error=edge_error)
        server.init_socket()
        box["server"], box["loop"] = server, get_hub().loop
        ready.set()
        server.serve_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box["server"]
    finally:
        box["loop"].run_callback_threadsafe(lambda: box["server"].stop(timeout=1))
        thread.join(5)


@pytest.fixture(scope="module")
def server():
    with serving() as srv:
        yield srv.address


def connect(address) -> socket.socket:
    return socket.create_connection(address, timeout=5)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a test fails on a 5 s stall instead)."""
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece


def exchange(address, payload: bytes) -> bytes:
    with connect(address) as sock:
        sock.sendall(payload)
        return read_all(sock)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def error_code(reply: bytes) -> str:
    return orjson.loads(reply.partition(b"\r\n\r\n")[2])["error"]["code"]


POST = b"POST /echo HTTP/1.1\r\nHost: t\r\n"


# --- smuggling shapes: refused with 400 and the connection closed --------------------------------
@pytest.mark.parametrize("head", [
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    b"Content-Length: 3\r\nContent-Length: 3\r\n",
    b"Content-Length: 3\r\nContent-Length: 4\r\n",
    b"Content-Length: 3, 3\r\n",
    b"Content-Length: +3\r\n",
    b"Content-Length : 3\r\n",
    b"X-Echo: a\r\n folded\r\nContent-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
])
def test_ambiguous_framing_is_refused_and_the_connection_closed(server, head):
    reply = exchange(server, POST + head + b"\r\nabc" + b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status_of(reply) == 400
    assert b"Connection: close" in reply
    assert b"/smuggled" not in reply  # nothing after the refused request is read as a request
    assert error_code(reply) == "malformed_request"


def test_an_invalid_chunk_size_is_refused(server):
    reply = exchange(server, POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    assert status_of(reply) == 400 and b"Connection: close" in reply
    overflow = exchange(server, POST + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n")
    assert status_of(overflow) == 400


@pytest.mark.parametrize("request_bytes,status", [
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
    (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    (b"GET /echo HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /echo HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (b"GET /echo\r\n\r\n", 505),  # HTTP/0.9
])
def test_codings_hosts_and_versions_the_server_does_not_serve(server, request_bytes, status):
    reply = exchange(server, request_bytes)
    assert status_of(reply) == status and b"Connection: close" in reply


# --- chunked request bodies ---------------------------------------------------------------------
def test_a_chunked_body_is_decoded_and_trailers_are_not_headers(server):
    reply = exchange(server, POST + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Echo: from-trailer\r\n\r\n")
    assert status_of(reply) == 200
    assert reply.endswith(b"POST /echo 11:hello world|-")


def test_a_chunked_body_over_the_limit_is_refused_unread(server):
    chunk = b"%x\r\n%s\r\n" % (1000, b"x" * 1000)
    with connect(server) as sock:
        sock.sendall(POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 5)
        reply = read_all(sock)
    assert status_of(reply) == 413 and b"Connection: close" in reply


# --- heads too large ------------------------------------------------------------------------------
def test_too_many_header_fields_is_a_431(server):
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(25))
    reply = exchange(server, b"GET /echo HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
    assert status_of(reply) == 431 and error_code(reply) == "request_header_fields_too_large"


def test_a_head_over_the_size_limit_is_a_431_even_without_a_line_end(server):
    with connect(server) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: ")
        try:
            for _ in range(40):  # far past the limit; the server stops reading long before
                sock.sendall(b"a" * 4096)
        except OSError:
            pass
        reply = read_all(sock)
    assert status_of(reply) == 431


# --- slow clients ---------------------------------------------------------------------------------
def test_a_head_that_trickles_in_is_cut_off_with_408(server):
    with connect(server) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\n")
        reply = b""
        try:
            for _ in range(30):  # one header line every 0.2 s: each read is quick, the head never ends
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.2)
        except OSError:
            pass  # the server closed the connection
        reply = read_all(sock)
    assert status_of(reply) == 408 and error_code(reply) == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed_quietly(server):
    with connect(server) as sock:
        assert read_all(sock) == b""


def test_a_stalled_body_is_cut_off_with_408(server):
    with connect(server) as sock:
        sock.sendall(POST + b"Content-Length: 100\r\n\r\nonly-part")
        reply = read_all(sock)
    assert status_of(reply) == 408


def test_a_large_body_stalled_while_the_app_reads_is_the_apps_408(server):
    with connect(server) as sock:
        sock.sendall(POST + b"Content-Length: 1000\r\n\r\n" + b"x" * 300)
        reply = read_all(sock)
    assert status_of(reply) == 408 and reply.endswith(b"request_timeout")


def test_a_body_below_the_minimum_rate_is_cut_off():
    limits = EdgeLimits(header_timeout=1.0, body_read_timeout=5.0, body_min_rate=200, body_rate_grace=0.5, buffer_body_bytes=256)
    with serving(limits) as srv, connect(srv.address) as sock:
        sock.sendall(POST + b"Content-Length: 1000\r\n\r\n")
        try:
            for _ in range(50):  # 10 bytes every 0.1 s: each gap is short, the rate is half the minimum
                sock.sendall(b"x" * 10)
                time.sleep(0.1)
        except OSError:
            pass
        reply = read_all(sock)
    assert status_of(reply) == 408


# --- bodies read only when the app asks -------------------------------------------------------------
def test_a_large_body_the_app_refuses_is_not_read_and_the_connection_closes(server):
    with connect(server) as sock:
        # Only the head is sent: the answer comes without the body ever arriving.
        sock.sendall(b"POST /guarded HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        reply = read_all(sock)
    assert status_of(reply) == 401 and b"Connection: close" in reply


def test_100_continue_is_sent_only_when_the_app_reads_the_body(server):
    with connect(server) as sock:
        sock.sendall(b"POST /guarded HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        reply = read_all(sock)
    assert status_of(reply) == 401 and b"100 Continue" not in reply
    with connect(server) as sock:
        sock.sendall(POST + b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"0123456789")
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock).endswith(b"POST /echo 10:0123456789|-")


# --- HTTP/1.0 -----------------------------------------------------------------------------------------
def test_http_1_0_closes_unless_keep_alive_is_asked_for(server):
    reply = exchange(server, b"GET /echo HTTP/1.0\r\n\r\n")
    assert status_of(reply) == 200 and b"Connection: close" in reply
    with connect(server) as sock:
        sock.sendall(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /two HTTP/1.0\r\n\r\n")
        reply = read_all(sock)
    first, _, second = reply.partition(b"GET /one 0:|-")
    assert b"Connection: keep-alive" in first
    assert b"GET /two 0:|-" in second and b"Connection: close" in second


def test_a_stream_to_an_http_1_0_client_is_close_delimited(server):
    reply = exchange(server, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head and b"Connection: close" in head
    assert body == b"data: 1\n\ndata: 2\n\n"


# --- pipelining ------------------------------------------------------------------------------------
def test_pipelined_requests_with_bodies_are_answered_in_order(server):
    large = b"L" * 1000  # over the buffering threshold: read while the app runs
    payload = (POST + b"Content-Length: 5\r\n\r\nfirst"
               + POST + b"Content-Length: 1000\r\n\r\n" + large
               + POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nthird\r\n0\r\n\r\n"
               + b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    reply = exchange(server, payload)
    answers = [reply.index(marker) for marker in (b"5:first", b"1000:" + b"L" * 40, b"5:third", b"GET /last")]
    assert answers == sorted(answers)
    assert reply.count(b"HTTP/1.1 200 OK") == 4


def test_an_upgrade_request_is_answered_and_the_connection_closed(server):
    reply = exchange(server, b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI * HTTP/2.0\r\n\r\n")
    assert status_of(reply) == 200 and b"Connection: close" in reply and reply.count(b"HTTP/1.1") == 1


# --- connection caps ------------------------------------------------------------------------------------
def _wait_until_admitted(address, tries: int = 50) -> bytes:
    for _ in range(tries):
        reply = exchange(address, b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        if status_of(reply) == 200:
            return reply
        time.sleep(0.1)
    return reply


@pytest.mark.parametrize("limits", [
    EdgeLimits(max_connections=2, max_connections_per_ip=0),
    EdgeLimits(max_connections=100, max_connections_per_ip=2),
], ids=["total", "per-ip"])
def test_connections_over_a_cap_get_a_clean_503_until_one_closes(limits):
    with serving(limits) as srv:
        held = [connect(srv.address) for _ in range(2)]
        for sock in held:  # each answered once, then idle on keep-alive
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        reply = exchange(srv.address, b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        assert status_of(reply) == 503
        assert b"Retry-After: 1\r\n" in reply and b"Connection: close" in reply
        body = orjson.loads(reply.partition(b"\r\n\r\n")[2])
        assert body["type"] == "error" and body["error"]["type"] == "api_error"  # Anthropic's format on its endpoint
        held.pop().close()
        assert status_of(_wait_until_admitted(srv.address)) == 200
        for sock in held:
            sock.close()
