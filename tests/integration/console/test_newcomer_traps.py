"""Places a newcomer tripped over in the consoles: a refund's reason in the customer's ledger, no
second "Refund" for a refunded charge, a key's spend net of refunds with its days listed, a banned
customer told why, "Email me" only where email goes out, and the last sign-in set by signing up."""
from __future__ import annotations

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ApiKey, User
from controlplane.services import bans, refunds
from tests import factories
from tests.console import person as staff, sign_in
from tests.helpers import post_form

from .conftest import event, ingest
from .test_account import sign_up
from .test_keys import create


def _refunded_request(as_ana) -> tuple[ApiKey, str]:
    create(as_ana, name="laptop")
    key = db.session.scalar(select(ApiKey))
    spent = event(key, cost=300_000)
    ingest(spent, event(key, cost=200_000))
    refunds.refund_request(factories.ACTOR, spent.request_id, "0.1", "Answer was cut off by an upstream fault")
    db.session.commit()
    return key, spent.request_id


def test_a_refunds_reason_shows_in_the_customers_ledger(as_ana, served):
    _, request_id = _refunded_request(as_ana)
    ledger = as_ana.get("/billing/ledger").get_data(as_text=True)
    row = next(line for line in ledger.split("<tr>") if "refund" in line and request_id in line)
    assert "Answer was cut off by an upstream fault" in row


def test_a_refunded_charge_offers_no_second_refund(app, as_ana, ana, served):
    _, request_id = _refunded_request(as_ana)
    support = sign_in(app.test_client(), staff("support"))
    page = support.get(f"/admin/refunds/?request_id={request_id}").get_data(as_text=True)
    assert "Refunded already" in page and "Look up" in page and 'value="Refund request"' not in page
    operator = sign_in(app.test_client(), staff("operator"))
    user_page = operator.get(f"/admin/users/{ana.id}").get_data(as_text=True)
    charge_rows = [row for row in user_page.split("<tr>") if "<td>charge</td>" in row]
    refunded = [row for row in charge_rows if request_id in row]
    assert refunded and ">Refund</a>" not in refunded[0] and "refunded" in refunded[0]
    assert any(">Refund</a>" in row for row in charge_rows if request_id not in row)  # the other charge still can be


def test_a_keys_spend_is_net_of_refunds_and_its_days_are_listed(as_ana, served):
    key, _ = _refunded_request(as_ana)
    listing = as_ana.get("/keys/").get_data(as_text=True)
    assert 'title="$0.400000 (400,000 µ$)"' in listing  # 0.30 + 0.20 charged, 0.10 refunded
    detail = as_ana.get(f"/keys/{key.id}").get_data(as_text=True)
    assert "$0.50</span> charged" in detail and "$0.10</span> refunded" in detail
    days = detail.split("Spend per day")[1].split("</table>")[0]
    assert days.count("<tr><td>20") == 1 and "No requests on this key" not in days


def test_a_key_without_requests_says_so_under_spend_per_day(as_ana, served):
    create(as_ana, name="idle")
    key = db.session.scalar(select(ApiKey))
    assert "No requests on this key in the last 30 days." in as_ana.get(f"/keys/{key.id}").get_data(as_text=True)


def test_a_banned_customer_sees_why(as_ana, ana):
    assert "Your account is suspended" not in as_ana.get("/").get_data(as_text=True)
    bans.ban(factories.ACTOR, "user", str(ana.id), "Card chargeback under review")
    db.session.commit()
    for path in ("/", "/keys/", "/billing/"):
        page = as_ana.get(path).get_data(as_text=True)
        assert "Your account is suspended:</strong> Card chargeback under review" in page and "refused (403)" in page, path


def _email_box(page: str) -> str:
    return page.split('name="email"')[0].rsplit("<input", 1)[1] + page.split('name="email"')[1].split(">", 1)[0]


def test_email_me_is_not_ticked_when_email_is_not_set_up(as_ana):
    page = as_ana.get("/billing/").get_data(as_text=True)
    assert "checked" not in _email_box(page) and "email is not set up on this gateway" in page
    # a saved alert keeps its own choice
    post_form(as_ana, "/billing/alerts", {"threshold": "1", "email": "y", "webhook_url": ""}, token_from="/billing/")
    assert "checked" in _email_box(as_ana.get("/billing/").get_data(as_text=True))


def test_signing_up_counts_as_the_last_sign_in(client):
    assert sign_up(client).status_code == 302
    user = db.session.scalar(select(User).where(User.email == "new@example.com"))
    assert user.last_login_at is not None
