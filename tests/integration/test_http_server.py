"""The relay's HTTP server on a real socket: keep-alive, pipelining, chunked streaming, 100-continue,
a body over the limit (answered by the app, then closed), bad requests, a client that goes away."""
from __future__ import annotations

import socket
import threading

import pytest

gevent = pytest.importorskip("gevent")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return iter([b"data: 1\n\n", b"data: 2\n\n"])
    if path == "/size":
        declared = environ.get("CONTENT_LENGTH", "")
        body = environ["wsgi.input"].read()
        status = "413 Payload Too Large" if declared and int(declared) > 100 else "200 OK"
        text = f"{declared}:{len(body)}:{environ.get('HTTP_X_TWICE')}".encode()
        start_response(status, [("Content-Length", str(len(text)))])
        return [text]
    body = f"{environ['REQUEST_METHOD']} {path} {environ['QUERY_STRING']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(scope="module")
def server():
    """The server in its own thread with its own gevent hub (the test process is not patched)."""
    from relay.http_server import HttpServer

    box = {}
    ready = threading.Event()

    def run():
        srv = HttpServer(("127.0.0.1", 0), app, max_body=100)
        srv.init_socket()
        box["server"] = srv
        ready.set()
        srv.serve_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    yield box["server"].address
    # the daemon thread ends with the test process


def exchange(address, payload: bytes, until: bytes = b"", timeout: float = 5) -> bytes:
    sock = socket.create_connection(address, timeout=timeout)
    sock.sendall(payload)
    data = b""
    try:
        while not (until and until in data):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    except socket.timeout:
        pass
    sock.close()
    return data


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server):
    data = exchange(server, b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\n\r\nPOST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", until=b"POST /b")
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"GET /a x=1") < data.index(b"POST /b")
    assert b"Connection: close" not in data


def test_a_streamed_body_is_chunked_and_ends(server):
    data = exchange(server, b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n", until=b"0\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in data
    assert b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n" in data


def test_a_body_over_the_limit_reaches_the_app_unread_and_the_connection_closes(server):
    data = exchange(server, b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n", until=b"\r\n\r\n5000")
    assert b"413" in data and b"5000:0" in data and b"Connection: close" in data
    assert b"100 Continue" not in data  # nobody should send a body that will not be read


def test_100_continue_then_the_body(server):
    sock = socket.create_connection(server, timeout=5)
    sock.sendall(b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\nX-Twice: a\r\nX-Twice: b\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
    sock.sendall(b"abc")
    reply = sock.recv(1000)
    sock.close()
    assert b"200 OK" in reply and b"3:3:a,b" in reply


def test_garbage_is_a_400_and_an_endless_head_a_431(server):
    assert exchange(server, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    assert exchange(server, huge).startswith(b"HTTP/1.1 431")


def test_a_client_that_goes_away_mid_stream_does_not_stop_the_server(server):
    sock = socket.create_connection(server, timeout=5)
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    sock.close()
    assert b"GET /still-here" in exchange(server, b"GET /still-here HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
