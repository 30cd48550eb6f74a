"""Streams through the relay's own HTTP server, where the event loop pumps them (relay/pump.py):
what the caller receives byte for byte, keep-alive after a stream, an upstream that drops or goes
quiet mid-stream, a caller that hangs up, a caller that reads slowly — and what each is charged."""
from __future__ import annotations

import json
import socket
import time

import pytest

from relay import pricing, tokens
from relay.settings import Timeouts
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.fakes.tls import certificate
from tests.relay_harness import Relay, assert_money_consistent, events_of, request_log

PRICE = pricing.Price("gpt-4o-mini", 3_000_000, 15_000_000)
PROMPT = tokens.prompt_tokens([{"role": "user", "content": "Say hello"}], None)


@pytest.fixture(scope="module", params=["http", "https"])
def upstream(request):
    """Every case over plain HTTP and over TLS (what real providers speak: reads go through the SSL
    object, which may hold decrypted bytes no readiness event announces)."""
    fake = FakeOpenAI(tls=request.param == "https")
    yield fake
    fake.close()


def customer_and_relay(app, upstream, monkeypatch, idle: float) -> tuple[Relay, str]:
    """A funded key, a channel to `upstream` and a relay whose streams time out after `idle` quiet seconds."""
    if upstream.tls:
        monkeypatch.setenv("SSL_CERT_FILE", certificate()[0])
    upstream.reset_log()
    factories.price("gpt-4o-mini", input="3", output="15")
    user = factories.funded_user("10")
    _, secret = factories.api_key(user)
    factories.channel(upstream.url, keys_=("sk-up-1",))
    return Relay(app, timeouts=Timeouts(connect=1.0, first_byte=3.0, idle=idle, total=max(8.0, 2 * idle))), secret


@pytest.fixture
def world(app, upstream, monkeypatch):
    relay, secret = customer_and_relay(app, upstream, monkeypatch, idle=0.5)
    with relay.served() as address:
        yield relay, address, secret


def request(key: str, **extra) -> bytes:
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Say hello"}], **extra}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nAuthorization: Bearer "
            + key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class Reply:
    """One chunked HTTP response read off a raw socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        self.body = b""
        self.ended = False

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the relay closed the connection")
        self.buf += data

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        found, _, self.buf = self.buf.partition(marker)
        return found

    def read_chunk(self) -> bytes | None:
        size = int(self._until(b"\r\n"), 16)
        while len(self.buf) < size + 2:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size + 2:]
        if size == 0:
            self.ended = True
            return None
        self.body += data
        return data

    def read_all(self) -> bytes:
        while self.read_chunk() is not None:
            pass
        return self.body


def connect(address, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(address)
    return sock


def test_streams_arrive_whole_and_the_connection_serves_the_next_request(world, upstream):
    relay, address, key = world
    sock = connect(address)
    for content in ("one two three", "four five"):
        upstream.push(Behaviour(content=content))
        sock.sendall(request(key))
        reply = Reply(sock)
        events = events_of(reply.read_all())
        assert reply.status == 200 and reply.headers["transfer-encoding"] == "chunked"
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"]) == content
        assert events[-1] == "[DONE]" and all("usage" not in e for e in events[:-1])  # the relay's own usage request is hidden
        log = request_log(reply.headers["x-request-id"])
        assert (log.status, log.output_tokens, log.usage_source) == (200, len(content.split()), "upstream")
    sock.close()
    assert_money_consistent(relay.redis)


def test_the_caller_who_asked_for_usage_gets_the_usage_chunk(world, upstream):
    relay, address, key = world
    upstream.push(Behaviour(content="Hi there"))
    sock = connect(address)
    sock.sendall(request(key, stream_options={"include_usage": True}))
    events = events_of(Reply(sock).read_all())
    assert events[-2]["usage"]["completion_tokens"] == 2 and events[-2]["choices"] == []
    sock.close()


def test_an_upstream_drop_mid_stream_ends_the_body_with_an_error_event_and_a_partial_charge(world, upstream):
    relay, address, key = world
    upstream.push(Behaviour(reset_after_chunks=3))  # role chunk, "Hello", " from", then the connection drops
    sock = connect(address)
    sock.sendall(request(key))
    reply = Reply(sock)
    events = events_of(reply.read_all())
    assert [e["choices"][0]["delta"].get("content") for e in events[:3]] == ["", "Hello", " from"]
    assert events[-1]["error"]["code"] == "upstream_stream_interrupted" and "[DONE]" not in events
    delivered = tokens.text_tokens("Hello") + tokens.text_tokens(" from")
    log = request_log(reply.headers["x-request-id"])
    assert (log.status, log.output_tokens) == (502, delivered)
    assert log.cost == pricing.cost(pricing.Usage(input=PROMPT, output=delivered), PRICE, 10_000)
    # The body ended properly: the same connection answers the next request.
    upstream.push(Behaviour(content="again"))
    sock.sendall(request(key))
    assert events_of(Reply(sock).read_all())[-1] == "[DONE]"
    sock.close()
    assert_money_consistent(relay.redis)


def test_an_upstream_that_goes_quiet_mid_stream_times_out(world, upstream):
    relay, address, key = world
    upstream.push(Behaviour(content="slow words here", chunk_gap=2.5))  # idle limit is 0.5 s
    sock = connect(address)
    sock.sendall(request(key))
    started = time.monotonic()
    reply = Reply(sock)
    events = events_of(reply.read_all())
    assert time.monotonic() - started < 2.4, "the quiet upstream was waited for instead of timed out"
    assert events[-1]["error"]["code"] == "upstream_stream_interrupted" and "timed out" in events[-1]["error"]["message"]
    log = request_log(reply.headers["x-request-id"])
    assert log.status == 502
    sock.close()
    assert_money_consistent(relay.redis)


def test_a_caller_hanging_up_closes_the_upstream_and_is_settled_once(world, upstream):
    relay, address, key = world
    words = " ".join(f"w{i}" for i in range(40))
    upstream.push(Behaviour(content=words, chunk_gap=0.05))
    sock = connect(address)
    sock.sendall(request(key))
    reply = Reply(sock)
    for _ in range(3):
        reply.read_chunk()
    request_id = reply.headers["x-request-id"]
    sock.close()
    deadline = time.monotonic() + 5
    while not upstream.gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.gone(), "the relay kept reading from the upstream after the caller left"
    log = request_log(request_id)
    assert (log.status, log.error_code) == (499, "client_disconnected")
    assert 2 <= log.output_tokens < 40
    assert_money_consistent(relay.redis)


def test_a_caller_reading_slowly_gets_every_byte_in_order(world, upstream):
    """A small receive buffer and a pause: the relay's sends fill the socket and must wait."""
    relay, address, key = world
    words = " ".join(f"word{i:05d}" for i in range(3000))
    upstream.push(Behaviour(content=words))
    sock = connect(address, receive_buffer=4096)
    sock.sendall(request(key))
    reply = Reply(sock)
    time.sleep(1.0)
    events = events_of(reply.read_all())
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert text == words and events[-1] == "[DONE]"
    log = request_log(reply.headers["x-request-id"])
    assert (log.status, log.output_tokens) == (200, 3000)
    sock.close()
    assert_money_consistent(relay.redis)


def test_a_hang_up_while_the_upstream_is_thinking_is_noticed_at_once(app, upstream, monkeypatch):
    """The caller leaves during a long gap between upstream events: the stream ends (and is settled)
    then, not when the upstream next sends — which a reasoning model may not do for a minute."""
    relay, key = customer_and_relay(app, upstream, monkeypatch, idle=30.0)
    upstream.push(Behaviour(content="think deeply now", chunk_gap=3.0))
    with relay.served() as address:
        sock = connect(address)
        sock.sendall(request(key))
        reply = Reply(sock)
        reply.read_chunk()  # the role chunk; the next event is three seconds away
        request_id = reply.headers["x-request-id"]
        sock.close()
        left = time.monotonic()
        log = None
        while log is None and time.monotonic() - left < 2.0:
            time.sleep(0.1)
            try:
                log = request_log(request_id)
            except AssertionError:
                log = None
        assert log is not None, "the hang-up was not noticed before the upstream's next event"
        assert (log.status, log.error_code) == (499, "client_disconnected")
        assert_money_consistent(relay.redis)


def test_a_caller_leaving_right_after_the_final_event_is_charged_as_a_whole_answer(world, upstream):
    """SDKs stop reading at [DONE] and may close before the upstream has ended its body: that
    caller got everything, so it is billed the upstream's usage, not treated as a hang-up."""
    relay, address, key = world
    upstream.push(Behaviour(content="all of it", chunk_gap=0.3))  # 0.3 s after [DONE], then the body's end
    sock = connect(address)
    sock.sendall(request(key))
    reply = Reply(sock)
    while b"[DONE]" not in reply.body:
        reply.read_chunk()
    request_id = reply.headers["x-request-id"]
    sock.close()
    time.sleep(0.6)
    log = request_log(request_id)
    assert (log.status, log.error_code, log.usage_source) == (200, None, "upstream")
    assert log.cost == pricing.cost(pricing.Usage(input=12, output=3), PRICE, 10_000)
    assert_money_consistent(relay.redis)
