"""Email through a real SMTP server and signed webhooks to a real HTTP listener."""
from __future__ import annotations

import json

import pytest

from controlplane.notify import SmtpSettings, send_email, send_webhook, signature
from relay.client_ip import parse_networks
from relay.egress import Egress, EgressPolicy
from tests.fakes.http import FakeServer, Handler
from tests.fakes.smtp_server import FakeSMTP

# The receiver listens on loopback, which only an explicit allow-list opens.
LOOPBACK = Egress(EgressPolicy(parse_networks("127.0.0.0/8")))


@pytest.fixture
def smtp():
    server = FakeSMTP()
    yield server
    server.close()


def test_email_is_delivered(smtp):
    settings = SmtpSettings(host="127.0.0.1", port=smtp.port, starttls=False, sender="billing@gateway.example")
    assert send_email(settings, "ana@example.com", "Low balance", "Your balance is $1.20.").ok
    message = smtp.messages[0]
    assert message["To"] == "ana@example.com" and message["Subject"] == "Low balance"
    assert "$1.20" in message.get_payload()


def test_email_without_smtp_is_skipped_not_crashed():
    result = send_email(SmtpSettings(), "a@example.com", "s", "b")
    assert not result.ok and "not configured" in result.detail


class _Receiver(Handler):
    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.fake.record(path=self.path, headers=dict(self.headers), body=self.rfile.read(length))
        self.send_json(204 if self.path == "/ok" else 500, b"")


def test_webhooks_are_signed_and_failures_reported():
    receiver = type("Receiver", (FakeServer,), {"handler_class": _Receiver})()
    try:
        assert send_webhook(receiver.origin + "/ok", "balance.low", {"balance": 1}, egress=LOOPBACK, secret="s3cret").ok
        got = receiver.requests[0]
        stamp = got["headers"]["X-Switchboard-Timestamp"]
        assert got["headers"]["X-Switchboard-Signature"] == "sha256=" + signature("s3cret", stamp, got["body"])
        assert json.loads(got["body"])["event"] == "balance.low"
        assert not send_webhook(receiver.origin + "/fail", "x", {}, egress=LOOPBACK).ok
        assert not send_webhook("http://127.0.0.1:9/", "x", {}, egress=LOOPBACK, timeout=2).ok
    finally:
        receiver.close()
