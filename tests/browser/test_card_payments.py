"""Card payments in a real browser against a real `switchboard up` whose Stripe is the fake on a
real socket (`SWITCHBOARD_STRIPE_API_BASE`): the operator enters the Stripe keys, a customer chooses
an amount and is sent to Checkout, Stripe's signed webhook reaches the gateway over HTTP, and the
return page, the invoice and the operator's payments list show the credit — with screenshots."""
from __future__ import annotations

import pytest
import requests

from tests.browser.conftest import shoot, sign_in
from tests.fakes.stripe_server import FakeStripe
from tests.gateway import Gateway

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"
CUSTOMER = "nadia@example.com"


@pytest.fixture(scope="module")
def fake_stripe():
    fake = FakeStripe()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake_stripe):
    gateway = Gateway(tmp_path_factory.mktemp("card-payments"), {"SWITCHBOARD_STRIPE_API_BASE": fake_stripe.url})
    gateway.cli("user", "create", "--email", CUSTOMER, "--password", PASSWORD)
    yield gateway
    gateway.stop()


def test_an_operator_sets_up_stripe_and_a_customer_pays_by_card(browser, page, gw, fake_stripe):
    sign_in(page, gw)
    page.get_by_role("navigation", name="Operator console").get_by_role("link", name="Payments").click()
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Publishable key").fill("pk_test_fake")
    page.get_by_label("Secret key").fill(fake_stripe.secret_key)
    page.get_by_label("Webhook signing secret").fill(fake_stripe.webhook_secret)
    page.get_by_label("Amounts offered (USD)").fill("10, 25, 50, 100")
    page.get_by_label("Seller name").fill("Switchboard Ltd")
    page.get_by_label("Seller address").fill("1 Relay Street\nLondon EC1A 1AA")
    page.get_by_label("Seller tax id").fill("GB123456789")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Card payment settings saved").wait_for()
    assert "Card payment settings saved" in page.content() and "••••" + fake_stripe.secret_key[-4:] in page.content()
    shoot(page, "admin-payment-settings")

    customer = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    sign_in(customer, gw, CUSTOMER, PASSWORD)
    customer.goto(gw.url + "/billing/")
    customer.get_by_role("link", name="Add money by card", exact=True).click()
    customer.get_by_label("$25.00").check()
    customer.get_by_label("Name or company").fill("Nadia Consulting")
    customer.get_by_label("Billing address").fill("7 Token Lane\nManchester M1 1AA")
    customer.get_by_label("Tax id (VAT, GST…)").fill("GB987654321")
    shoot(customer, "user-topup")
    customer.get_by_role("button", name="Continue to payment").click()
    customer.wait_for_url(fake_stripe.url + "/pay/**")
    assert customer.url.startswith(fake_stripe.url + "/pay/") and "Pay 25.00 USD" in customer.content()

    session_id = customer.url.rsplit("/", 1)[1]
    success = fake_stripe.sessions[session_id]["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
    customer.goto(success)
    assert "Waiting for the payment" in customer.content()  # the return credits nothing: only the webhook does
    body, headers = fake_stripe.signed(fake_stripe.pay(session_id))
    delivered = requests.post(gw.url + "/stripe/webhook", data=body, headers=headers, timeout=10)
    assert delivered.status_code == 200 and delivered.json()["outcome"] == "credited $25.00"
    customer.goto(success)
    assert "Payment received" in customer.content()
    shoot(customer, "user-topup-return")
    customer.get_by_role("link", name="INV-000001").click()
    customer.get_by_role("heading", name="Invoice INV-000001").wait_for()
    assert "Nadia Consulting" in customer.content() and "GB123456789" in customer.content()
    shoot(customer, "user-invoice")
    customer.goto(gw.url + "/billing/payments")
    shoot(customer, "user-card-payments")
    assert gw.balance(CUSTOMER)["balance_micro_usd"] == 25_000_000

    page.goto(gw.url + "/admin/payments/")
    assert session_id in page.content() and "INV-000001" in page.content()
    shoot(page, "admin-payments")
