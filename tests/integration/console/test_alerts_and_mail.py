"""Low-balance alerts (once per crossing, email and signed webhook, by the worker job) and emailed
receipts and invitations, through a real SMTP server and a real HTTP listener."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from rq import Queue, SimpleWorker
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import AlertSetting, LedgerEntry
from controlplane.notify import SmtpSettings
from controlplane.runtime import runtime
from controlplane.services import billing
from relay.client_ip import parse_networks
from relay.quota import Budgets
from relay.usage import UsageEvent
from tests import factories
from tests.fakes.http import FakeServer, Handler
from tests.fakes.smtp_server import FakeSMTP
from tests.helpers import post_form
from workers import alerts, mail


class _Receiver(Handler):
    def do_POST(self):
        self.fake.record(path=self.path, headers=dict(self.headers), body=self.rfile.read(int(self.headers["Content-Length"])))
        self.send_json(204, b"")


@pytest.fixture
def inbox(app):
    """SMTP configured for the app and its workers, delivering into a real SMTP server."""
    server = FakeSMTP()
    rt, original = runtime(), runtime().settings
    configured = replace(original, smtp=SmtpSettings(host="127.0.0.1", port=server.port, starttls=False), webhook_secret="hook-secret")
    rt.settings, app.config["SWITCHBOARD"] = configured, configured
    yield server
    rt.settings, app.config["SWITCHBOARD"] = original, original
    server.close()


@pytest.fixture
def receiver(app, monkeypatch):
    """A webhook receiver on loopback, which customers' URLs may reach only because this opens it."""
    monkeypatch.setattr(runtime(), "customer_allow", parse_networks("127.0.0.0/8"))
    fake = type("Receiver", (FakeServer,), {"handler_class": _Receiver})()
    yield fake
    fake.close()


def spend(account_id: int, usd_micro: int) -> None:
    """Charge the live balance as the relay does (hold, then settle)."""
    quota = runtime().quota
    rid = f"spend-{time.monotonic_ns()}"
    hold = quota.hold(rid, account_id, 999, usd_micro, None, time.time() + 60, Budgets())
    quota.settle(hold, usd_micro, UsageEvent(request_id=rid, started_at=0, finished_at=0, endpoint="x", status=200).encode())


def run_jobs() -> None:
    redis = runtime().redis
    SimpleWorker([Queue("default", connection=redis)], connection=redis).work(burst=True)


def test_the_alert_goes_out_once_per_crossing_and_rearms_above_the_threshold(app, as_ana, ana, inbox, receiver):
    response = post_form(as_ana, "/billing/alerts", {"threshold": "5", "email": "y", "webhook_url": receiver.origin + "/hook"}, token_from="/billing/")
    assert response.status_code == 302
    assert alerts.check_low_balances() == 0  # $10, above $5
    spend(ana.account_id, 6_000_000)
    assert alerts.check_low_balances() == 1
    assert alerts.check_low_balances() == 0  # still below: not again
    message = inbox.messages[0]
    assert message["To"] == "ana@example.com" and "$4.00" in message["Subject"]
    hook = receiver.requests[0]
    assert json.loads(hook["body"])["data"]["balance_micro_usd"] == 4_000_000 and hook["headers"]["X-Switchboard-Signature"].startswith("sha256=")
    assert "alert went out" in as_ana.get("/billing/").get_data(as_text=True)
    billing.topup(factories.ACTOR, ana.account, "3", "back above")  # $7
    assert alerts.check_low_balances() == 0 and not db.session.scalar(select(AlertSetting)).below
    spend(ana.account_id, 2_500_000)  # $4.50: a second crossing
    assert alerts.check_low_balances() == 1
    assert len(receiver.requests) == 2


def test_an_alert_form_with_a_bad_webhook_or_no_channel_changes_nothing(app, as_ana):
    for fields, message in (({"threshold": "5", "webhook_url": "http://169.254.169.254/latest"}, "link-local"),
                            ({"threshold": "5"}, "Choose email, a webhook, or both"),
                            ({"threshold": "five", "email": "y"}, "Enter an amount")):
        response = post_form(as_ana, "/billing/alerts", fields, token_from="/billing/")
        assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert db.session.scalar(select(AlertSetting.id)) is None


def test_a_top_up_emails_a_receipt_once(app, ana, inbox):
    entry = billing.topup(factories.ACTOR, ana.account, "25", "wire transfer 4411")
    run_jobs()
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert f"R-{entry.id:08d}" in message["Subject"] and "$25.00" in message.get_payload() and "wire transfer 4411" in message.get_payload()
    assert mail.send_receipt(entry.id) == 0  # a retried job sends nothing twice
    assert len(inbox.messages) == 1


def test_without_smtp_nothing_is_queued(app, ana):
    billing.topup(factories.ACTOR, ana.account, "1", "x")
    assert Queue("default", connection=runtime().redis).count == 0


def test_an_email_invitation_is_sent_with_its_link(app, as_ana, inbox):
    post_form(as_ana, "/organisation/new", {"name": "Acme"}, token_from="/organisation")
    response = post_form(as_ana, "/organisation/invitations", {"email": "carol@example.com", "role": "member"}, token_from="/organisation")
    assert "emailed to carol@example.com" in response.get_data(as_text=True)
    run_jobs()
    body = inbox.messages[0].get_payload()
    assert inbox.messages[0]["To"] == "carol@example.com" and "/invitations/" in body and "Acme" in body


def test_receipts_reach_an_organisations_owners_and_admins(app, ana, inbox):
    from controlplane.services import organisations, redemption

    from .conftest import organisation, person

    org = organisation(ana, "Acme")
    bob, carol = person("bob@example.com"), person("carol@example.com")
    for user, role in ((bob, "admin"), (carol, "member")):
        _, token = organisations.invite(factories.ACTOR, organisations.membership(org.id, ana.id), None, role)
        organisations.accept(factories.ACTOR, user, organisations.open_invitation(token))
    _, codes = redemption.generate_batch(factories.ACTOR, "promo", "5", 1)
    redemption.redeem(factories.ACTOR, bob, org, codes[0])
    run_jobs()
    assert sorted(m["To"] for m in inbox.messages) == ["ana@example.com", "bob@example.com"]
    assert db.session.scalar(select(LedgerEntry.kind).where(LedgerEntry.account_id == org.id)) == "redemption"
