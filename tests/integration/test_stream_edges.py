"""Streams bill only what was delivered and pass only what is valid: a caller gone before the first
byte pays at most the input, and a 200 `text/event-stream` that is not SSE never reaches the caller
(retried elsewhere, never billed) — through the relay's own server on real sockets."""
from __future__ import annotations

import time

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import RequestLog
from relay import pricing
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.integration.test_stream_pump import PRICE, PROMPT, Reply, connect, customer_and_relay, request, upstream, world  # noqa: F401
from tests.relay_harness import assert_money_consistent, events_of, ingest, request_log, steps

HTML = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n\n<body>nginx</body></html>\n"


def test_a_caller_gone_before_the_first_byte_pays_only_the_input_even_for_a_whole_answer(world, upstream):
    relay, address, key = world
    # The whole answer arrives in one read, after the caller has already closed its connection.
    upstream.push(Behaviour(content="a complete answer that nobody will read", one_write=True, first_byte_delay=0.4))
    sock = connect(address)
    sock.sendall(request(key))
    sock.close()
    time.sleep(1.0)
    ingest()
    log = db.session.scalars(select(RequestLog).order_by(RequestLog.id.desc())).first()
    assert (log.status, log.error_code, log.output_tokens) == (499, "client_disconnected", 0)
    assert log.cost == pricing.cost(pricing.Usage(input=PROMPT), PRICE, 10_000)
    assert_money_consistent(relay.redis)


def test_a_whole_answer_in_one_read_is_delivered_and_charged_as_reported(world, upstream):
    relay, address, key = world
    upstream.push(Behaviour(content="ready at once", one_write=True))
    sock = connect(address)
    sock.sendall(request(key))
    reply = Reply(sock)
    events = events_of(reply.read_all())
    assert events[-1] == "[DONE]"
    log = request_log(reply.headers["x-request-id"])
    assert (log.status, log.usage_source) == (200, "upstream")
    sock.close()
    assert_money_consistent(relay.redis)


def test_an_html_page_under_an_event_stream_header_is_retried_elsewhere_and_never_billed(app, upstream, monkeypatch):
    relay, key = customer_and_relay(app, upstream, monkeypatch, idle=1.0)
    second = FakeOpenAI()
    try:
        factories.channel(second.url, keys_=("sk-up-2",), priority=-1)
        upstream.default = Behaviour(raw_stream=HTML)
        with relay.served() as address:
            sock = connect(address)
            sock.sendall(request(key))
            reply = Reply(sock)
            body = reply.read_all()
            sock.close()
        assert reply.status == 200 and b"<html>" not in body and events_of(body)[-1] == "[DONE]"
        log = request_log(reply.headers["x-request-id"])
        attempts = steps(log, "attempt")
        assert [a["status"] for a in attempts] == [200, 200] and attempts[0]["effect"] == "failure"
        assert log.channel_id != attempts[0]["channel"]
        assert_money_consistent(relay.redis)
    finally:
        second.close()


def test_an_html_page_on_the_only_channel_is_a_502_and_costs_nothing(world, upstream):
    relay, address, key = world
    upstream.default = Behaviour(raw_stream=HTML)
    sock = connect(address)
    sock.sendall(request(key))
    reply = Reply(sock)
    body = reply.read_all() if reply.status == 200 else b""
    sock.close()
    assert reply.status == 502 and b"<html>" not in body
    log = request_log(reply.headers["x-request-id"])
    assert (log.status, log.error_code, log.cost) == (502, "upstream_invalid_response", 0)
    assert_money_consistent(relay.redis)
