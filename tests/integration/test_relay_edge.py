"""The relay at its edge: a large body is read only after the caller's key has been checked, and
behind trusted proxies the client the forwarding headers name is the one IP bans, key allow-lists
and request logs see — while the same headers from anyone else are ignored."""
from __future__ import annotations

import json
import socket

import orjson
import pytest

from controlplane.services import bans
from relay.client_ip import parse_networks
from tests import factories
from tests.relay_harness import Relay, request_log

PROXIES = parse_networks("10.0.0.0/8")
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


@pytest.fixture
def customer(upstream):
    factories.price("gpt-4o-mini", input="3", output="15")
    factories.channel(upstream.url)
    return factories.funded_user("10")


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(65536):
        data += piece
    return data


def upload_head(path: str, auth: bytes, length: int) -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n" + auth
            + b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n")


# --- the key before the body ----------------------------------------------------------------------
def test_a_large_upload_is_refused_on_its_key_before_the_body_is_sent(app, customer):
    _, secret = factories.api_key(customer, ip_allow=["192.0.2.0/24"])
    relay = Relay(app)
    cases = [("/v1/chat/completions", b"Authorization: Bearer sk-wrong", 401, "invalid_api_key"),
             ("/v1/messages", b"x-api-key: sk-wrong", 401, "authentication_error"),
             ("/v1/chat/completions", b"Authorization: Bearer " + secret.encode(), 403, "ip_not_allowed")]
    with relay.served() as address:
        for path, auth, status, code in cases:
            with socket.create_connection(address, timeout=5) as sock:
                # Ten megabytes announced, none sent: the answer cannot have waited for them.
                sock.sendall(upload_head(path, auth, 10_000_000))
                reply = read_all(sock)
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 %d" % status) and b"Connection: close" in head
            error = orjson.loads(body)["error"]
            assert code in (error.get("code"), error.get("type"))  # OpenAI's format, or Anthropic's on /v1/messages


def test_a_large_body_from_a_known_caller_is_read_and_served(app, customer):
    _, secret = factories.api_key(customer)
    relay = Relay(app)
    body = json.dumps({**BODY, "user": "u" * 200, "messages": [{"role": "user", "content": "x" * 150_000}]}).encode()
    with relay.served() as address, socket.create_connection(address, timeout=10) as sock:
        sock.sendall(upload_head("/v1/chat/completions", b"Authorization: Bearer " + secret.encode(), len(body))
                     .replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body)
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200")
    assert orjson.loads(reply.partition(b"\r\n\r\n")[2])["object"] == "chat.completion"


# --- trusted proxies ---------------------------------------------------------------------------------
def call(relay: Relay, secret: str, peer: str, **headers):
    relay.app.holder.refresh()
    return relay.client.post("/v1/chat/completions", json=BODY, environ_base={"REMOTE_ADDR": peer},
                             headers={"Authorization": f"Bearer {secret}", **headers})


def test_behind_a_trusted_proxy_the_key_allow_list_and_the_log_see_the_client(app, customer):
    _, secret = factories.api_key(customer, ip_allow=["203.0.113.0/24"])
    relay = Relay(app, trusted_proxies=PROXIES)
    through_proxy = call(relay, secret, "10.0.0.2", **{"X-Forwarded-For": "6.6.6.6, 203.0.113.9"})
    assert through_proxy.status_code == 200
    assert request_log(through_proxy.headers["X-Request-Id"]).client_ip == "203.0.113.9"
    # The same claim from a peer that is not a trusted proxy is ignored: the peer is the client.
    spoofed = call(relay, secret, "198.51.100.7", **{"X-Forwarded-For": "203.0.113.9"})
    assert spoofed.status_code == 403 and spoofed.get_json()["error"]["code"] == "ip_not_allowed"
    assert request_log(spoofed.headers["X-Request-Id"]).client_ip == "198.51.100.7"


def test_an_ip_ban_follows_the_client_through_proxies_and_cannot_be_dodged_by_a_spoofed_header(app, customer):
    _, secret = factories.api_key(customer)
    bans.ban(factories.ACTOR, "ip", "203.0.113.9", "abuse")
    relay = Relay(app, trusted_proxies=PROXIES)
    banned = [
        call(relay, secret, "10.0.0.2", **{"X-Forwarded-For": "203.0.113.9"}),
        call(relay, secret, "10.0.0.2", **{"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.9.9.9"}),  # a made-up hop on the left
        call(relay, secret, "10.0.0.2", Forwarded='for="203.0.113.9:4711";proto=https'),
        call(relay, secret, "203.0.113.9", **{"X-Forwarded-For": "198.51.100.1"}),  # not a proxy: its claim is ignored
    ]
    assert [(r.status_code, r.get_json()["error"]["code"]) for r in banned] == [(403, "banned")] * 4
    # Without trusted proxies nobody's forwarding headers count: the proxy itself is the client.
    assert call(Relay(app), secret, "10.0.0.2", **{"X-Forwarded-For": "203.0.113.9"}).status_code == 200


def test_a_stream_to_an_http_1_0_client_is_close_delimited(app, customer):
    _, secret = factories.api_key(customer)
    relay = Relay(app)
    body = json.dumps({**BODY, "stream": True}).encode()
    head = upload_head("/v1/chat/completions", b"Authorization: Bearer " + secret.encode(), len(body)).replace(b"HTTP/1.1", b"HTTP/1.0")
    with relay.served() as address, socket.create_connection(address, timeout=10) as sock:
        sock.sendall(head + body)
        reply = read_all(sock)  # the body ends where the connection does
    head, _, stream = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    assert b"Transfer-Encoding" not in head
    assert stream.startswith(b"data: {") and stream.endswith(b"data: [DONE]\n\n")
