"""One egress guard for every outbound connection, proved against real sockets: customers' webhooks
never reach private space, channel URLs only the ranges an operator opened, and the address is
checked again whenever a connection is made — canaries record that nothing was ever sent."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from controlplane.errors import ServiceError
from controlplane.extensions import db
from controlplane.models import AlertSetting
from controlplane.notify import send_webhook
from controlplane.runtime import runtime
from controlplane.services import alerts, billing
from relay.client_ip import parse_networks
from relay.egress import Egress, EgressPolicy
from relay.http_client import ConnectFailed, HttpClient
from tests import factories
from tests.fakes import dns
from tests.fakes.canary import Canary
from tests.fakes.http import FakeServer, Handler
from tests.fakes.openai_server import FakeOpenAI
from tests.relay_harness import Relay
from workers import alerts as alert_worker

PUBLIC = "93.184.215.14"


@pytest.fixture
def canary():
    listener = Canary("127.0.0.2")
    yield listener
    listener.close()


@pytest.fixture
def customer(app):
    return factories.funded_user("10")


@pytest.mark.parametrize("url,message", [
    ("http://127.0.0.1:8000/hook", "loopback address: webhooks go to public addresses only"),
    ("http://[::1]:6379/", "loopback"),
    ("http://0x7f000001/", "four decimal numbers"),
    ("http://2130706433/", "four decimal numbers"),
    ("http://0177.0.0.1/", "four decimal numbers"),
    ("http://127.1/", "four decimal numbers"),
    ("http://localhost:6379/", "localhost points at 127.0.0.1, a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://10.0.0.5/", "private"),
    ("http://100.64.1.1/", "CGNAT"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://metadata.google.internal./computeMetadata/v1/", "Cloud metadata"),
    ("http://hooks.nowhere.invalid/", "does not resolve"),
    ("gopher://example.com/", "https://"),
])
def test_a_customer_webhook_never_points_into_private_space(customer, url, message):
    # conftest opens loopback for channels, as an operator might: customers are not affected by it
    with pytest.raises(ServiceError) as refused:
        alerts.save(factories.ACTOR, customer.account, "5", False, url)
    assert refused.value.field == "webhook_url" and message in refused.value.message
    assert db.session.scalar(select(AlertSetting.id)) is None


def test_a_customer_webhook_on_a_public_address_is_saved(customer, monkeypatch):
    monkeypatch.setattr(runtime(), "resolver", dns.names({"hooks.example.com": PUBLIC}))
    row = alerts.save(factories.ACTOR, customer.account, "5", False, "https://hooks.example.com/balance")
    assert row.webhook_url == "https://hooks.example.com/balance"


def test_a_webhook_name_rebound_to_loopback_after_saving_is_never_called(customer, monkeypatch):
    receiver = Canary("127.0.0.1")
    answers = {"hooks.example.com": PUBLIC}
    monkeypatch.setattr(runtime(), "resolver", dns.names(answers))
    try:
        alerts.save(factories.ACTOR, customer.account, "5", False, f"http://hooks.example.com:{receiver.port}/hook")
        answers["hooks.example.com"] = "127.0.0.1"  # DNS rebinding: the name moves after the check
        billing.adjust(factories.ACTOR, customer.account, "-6", "spent")  # $4: below the $5 threshold
        assert alert_worker.check_low_balances() == 1
        assert receiver.connections == 0
        row = db.session.scalar(select(AlertSetting))
        assert "not sent" in row.last_result and "forbidden" in row.last_result
    finally:
        receiver.close()


@pytest.mark.parametrize("url,message", [
    ("http://metadata.google.internal./v1", "Cloud metadata"),
    ("http://api.nowhere.invalid/v1", "does not resolve"),
    ("http://10.0.0.5:8000/v1", "allow its range in SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS"),
    ("http://169.254.169.254/v1", "can never be an upstream"),
    ("http://[fd00:ec2::254]/v1", "can never be an upstream"),
    ("http://0x0a000005/v1", "four decimal numbers"),
])
def test_channel_urls_are_checked_when_saved(app, url, message):
    with pytest.raises(ServiceError) as refused:
        factories.channel(url)
    assert refused.value.field == "base_url" and message in refused.value.message


def test_a_channel_name_resolving_into_an_unopened_range_is_refused(app, monkeypatch):
    monkeypatch.setattr(runtime(), "resolver", dns.names({"vllm.lab": "10.0.0.5"}))
    with pytest.raises(ServiceError) as refused:
        factories.channel("http://vllm.lab:8000/v1")
    assert "vllm.lab points at 10.0.0.5, a private address" in refused.value.message


def test_an_upstream_key_never_leaves_for_an_address_the_relay_forbids(app, canary):
    """The control plane (conftest: loopback opened) saves a channel at 127.0.0.2; the relay, whose
    operator opened only 127.0.0.1, refuses to connect: the canary hears nothing, the key stays home,
    and a channel on the opened address serves as usual."""
    allowed = FakeOpenAI()
    try:
        factories.price("gpt-4o-mini", input="3", output="15")
        factories.channel(canary.origin + "/v1", keys_=("sk-canary-secret",), priority=10)
        factories.channel(allowed.url, priority=0)
        _, secret = factories.api_key(factories.funded_user("10"))
        relay = Relay(app, egress_allow=parse_networks("127.0.0.1/32"))
        response = relay.chat(secret)
        assert response.status_code == 200  # failed over to the permitted channel
        assert canary.connections == 0 and not any(b"sk-canary-secret" in r for r in canary.received)
    finally:
        allowed.close()


def test_the_connect_time_check_holds_when_dns_moves_a_name(canary):
    """Rebinding below the relay's client: the name resolved to a permitted address when saved; now
    it resolves to a forbidden one and the connection is never made."""
    answers = {"api.upstream.test": "127.0.0.1"}
    client = HttpClient(pool_size=2, egress=Egress(EgressPolicy(parse_networks("127.0.0.1/32")), dns.names(answers)))
    answers["api.upstream.test"] = "127.0.0.2"
    with pytest.raises(ConnectFailed, match="forbidden"):
        client.request("POST", f"http://api.upstream.test:{canary.port}/v1/chat/completions",
                       {"Authorization": "Bearer sk-upstream-secret"}, b"{}", 2, 2)
    assert canary.connections == 0


class _Redirecting(Handler):
    def do_POST(self):
        self.fake.record(path=self.path)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_json(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})


def test_webhooks_never_follow_redirects_and_never_reach_loopback_by_default():
    receiver = type("Receiver", (FakeServer,), {"handler_class": _Redirecting})()
    loopback = Egress(EgressPolicy(parse_networks("127.0.0.0/8")))
    try:
        sent = send_webhook(receiver.origin + "/hook", "x", {}, egress=loopback)
        assert not sent.ok and sent.detail == "HTTP 302" and len(receiver.requests) == 1
        refused = send_webhook(receiver.origin + "/hook", "x", {}, egress=Egress())
        assert not refused.ok and "not sent" in refused.detail and len(receiver.requests) == 1
    finally:
        receiver.close()


class _Huge(Handler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(64 * 1024 * 1024))
        self.end_headers()
        try:
            for _ in range(1024):
                self.wfile.write(b"x" * 65536)
        except OSError:
            pass  # the client stopped reading, as it should


def test_fetching_models_stops_reading_at_its_size_limit(app, monkeypatch):
    from controlplane.services import channel_ops

    monkeypatch.setattr(channel_ops, "FETCH_LIMIT", 1024 * 1024)
    huge = type("Huge", (FakeServer,), {"handler_class": _Huge})()
    try:
        channel = factories.channel(huge.origin + "/v1")
        with pytest.raises(ServiceError, match="too large"):
            channel_ops.fetch_models(channel)
    finally:
        huge.close()


def test_probes_and_model_fetches_take_the_same_guard(app, canary, monkeypatch):
    """"Test now", the health worker's probes and "Fetch models" connect through the guard: a channel
    saved while its range was open is never reached once the operator closes it."""
    from dataclasses import replace

    from controlplane.services import channel_health, channel_ops
    from workers import health

    channel = factories.channel(canary.origin + "/v1", keys_=("sk-canary-secret",))
    settings = runtime().settings
    monkeypatch.setattr(runtime(), "settings", replace(settings, relay=replace(settings.relay, egress_allow=parse_networks("127.0.0.1/32"))))
    with pytest.raises(ServiceError):
        channel_ops.fetch_models(channel)
    assert all(not result.ok for result in channel_health.test_channel(channel.id))
    health.probe_channels([channel.id])
    assert canary.connections == 0 and not any(b"sk-canary-secret" in r for r in canary.received)


def test_the_ranges_an_operator_opened_are_announced_in_every_relays_log(app, caplog):
    Relay(app, egress_allow=parse_networks("10.0.0.0/8 fd00::/8"))
    assert "SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS" in caplog.text and "10.0.0.0/8, fd00::/8" in caplog.text
