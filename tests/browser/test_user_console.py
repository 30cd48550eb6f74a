"""The user console in a real browser against a real `switchboard up`: sign up, create a key, call
the relay with it from the openai SDK, see the request in usage and the charge in the ledger,
redeem a code, compare models in the playground — and a screenshot of every page."""
from __future__ import annotations

import csv
import io
import re
import time
from datetime import datetime, timedelta, timezone

import openai
import pytest

from relay.pricing import usd_text
from tests.browser.conftest import shoot, sign_in
from tests.browser.seed import seed_week, wait_for_ingestion
from tests.gateway import Gateway

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"
SHOWCASE = "maria@example.com"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    gateway = Gateway(tmp_path_factory.mktemp("user-console"), {"SWITCHBOARD_SIGNUP": "open"})
    gateway.cli("channel", "add", "--name", "fake-openai", "--type", "openai", "--base-url", upstream.url, "--keys", "sk-upstream-1",
                "--models", "gpt-4o-mini,gpt-4o,o3-mini")
    gateway.cli("price", "set", "gpt-4o-mini", "--input", "0.15", "--output", "0.60", "--cache-read", "0.075", "--now")
    gateway.cli("price", "set", "gpt-4o", "--input", "2.50", "--output", "10", "--cache-read", "1.25", "--now")
    gateway.cli("price", "set", "o3-mini", "--input", "1.10", "--output", "4.40", "--cache-read", "0.55", "--now")
    later = (datetime.now(timezone.utc) + timedelta(days=14)).strftime("%Y-%m-%dT00:00:00Z")
    gateway.cli("price", "set", "gpt-4o", "--input", "2", "--output", "8", "--cache-read", "1", "--effective", later)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def showcase(gw):
    """A customer with a week of history on three keys, in an organisation too."""
    user = gw.cli("user", "create", "--email", SHOWCASE, "--password", PASSWORD)
    gw.cli("topup", "--user", SHOWCASE, "--usd", "50", "--reason", "Invoice 2031-0042")
    keys = [gw.cli("key", "create", "--user", SHOWCASE, "--name", name, *extra)["id"] for name, extra in (
        ("production", ["--credit-limit-usd", "40"]), ("staging", []), ("notebook", ["--models", "gpt-4o-mini"]))]
    seed_week(gw, user["account_id"], user["id"], keys)
    wait_for_ingestion(gw)
    return user


def wait_until(check, timeout: float = 20, every: float = 0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError("condition not met in time")


def test_sign_up_create_a_key_call_the_relay_and_find_the_charge(page, gw):
    page.goto(gw.url + "/signup")
    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat password").fill(PASSWORD)
    shoot(page, "user-signup")
    page.get_by_role("button", name="Create account").click()
    page.get_by_text("Welcome to Switchboard").wait_for()
    gw.cli("topup", "--user", "newcomer@example.com", "--usd", "5", "--reason", "first top-up")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Keys").click()
    page.get_by_text("No keys yet").wait_for()
    page.get_by_role("link", name="Create key").click()
    page.get_by_label("Name").fill("journey")
    page.get_by_label("Daily budget (USD)").fill("1")
    page.get_by_label("gpt-4o-mini").check()
    shoot(page, "user-key-new")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New API key").inner_text()
    assert re.fullmatch(r"sk-sb-[A-Za-z0-9]{40}", secret)
    shoot(page, "user-key-created")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.url)
    page.get_by_role("button", name="Copy key").click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0, timeout=30)
    wait_until(lambda: _accepted(client))  # the relay has the new key within seconds
    reply = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert reply.parse().choices[0].message.content == "Hello from the fake upstream."
    request_id = reply.headers["x-request-id"]
    with pytest.raises(openai.PermissionDeniedError):  # the key's allow-list, set in the form
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

    def charged():
        page.goto(gw.url + "/billing/ledger")
        return page.get_by_text(request_id).count() > 0
    wait_until(charged)
    row = page.get_by_role("row").filter(has_text=request_id).first
    expected = (12 * 150_000 + 5 * 600_000 + 500_000) // 1_000_000  # the fake's usage at this price, rounded half up
    assert usd_text(-expected) in row.inner_text()  # the one money rule: sub-cent amounts keep their digits
    page.get_by_role("link", name=request_id).first.click()
    page.get_by_role("heading", name=re.compile("Request")).wait_for()
    assert page.get_by_text("Cached input tokens").is_visible() and page.get_by_text("journey").first.is_visible()
    page.goto(gw.url + "/usage/")
    assert page.get_by_role("cell", name="gpt-4o-mini").first.is_visible()


def _accepted(client) -> bool:
    try:
        client.models.list()
        return True
    except openai.AuthenticationError:
        return False


def test_an_operator_generates_codes_and_a_customer_redeems_one(browser, page, gw, showcase):
    sign_in(page, gw)
    page.goto(gw.url + "/admin/redemption/")
    page.get_by_label("Batch name").fill("Spring promotion")
    page.get_by_label("Amount per code (USD)").fill("5")
    page.get_by_label("Number of codes").fill("3")
    page.get_by_role("button", name="Generate codes").click()
    page.get_by_text("3 codes of $5.00 generated").wait_for()
    exported = page.request.get(page.url + "/codes.csv")
    codes = [row["code"] for row in csv.DictReader(io.StringIO(exported.text()))]
    assert len(codes) == 3

    customer = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    sign_in(customer, gw, SHOWCASE, PASSWORD)
    customer.get_by_role("navigation", name="Console").get_by_role("link", name="Billing").click()
    customer.get_by_label("Redemption code").fill(codes[0].lower())
    customer.get_by_role("button", name="Redeem").click()
    customer.get_by_text("Code redeemed: $5.00 added").wait_for()
    customer.get_by_label("Alert when the balance falls below (USD)").fill("10")
    assert not customer.get_by_label("Email me").is_checked()  # email is not set up on this gateway
    customer.get_by_label("Email me").check()
    customer.get_by_role("button", name="Save alert").click()
    customer.get_by_text("Low-balance alert saved").wait_for()
    shoot(customer, "user-billing")
    customer.get_by_role("link", name=re.compile("^R-")).first.click()
    customer.get_by_text("Spring promotion").wait_for()
    shoot(customer, "user-receipt")
    customer.context.close()

    page.reload()
    assert page.get_by_role("link", name=SHOWCASE).is_visible()
    shoot(page, "admin-redemption")


def test_compare_two_models_in_the_playground(page, gw, showcase):
    sign_in(page, gw, SHOWCASE, PASSWORD)
    page.goto(gw.url + "/playground/")
    key_select = page.get_by_label("Key")
    key_select.select_option(key_select.locator("option", has_text="staging").get_attribute("value"))
    page.get_by_label("Compare models").check()
    page.get_by_label("Model", exact=True).select_option("gpt-4o-mini")
    page.get_by_label("Model 2", exact=True).select_option("gpt-4o")
    page.get_by_label("System prompt").fill("Answer in one sentence.")
    page.get_by_label("Message").fill("Say hello.")
    page.get_by_role("button", name="Run").click()
    answers = page.locator(".pg-answer")
    answers.nth(1).get_by_text("Hello from the fake upstream.").wait_for()
    page.locator(".pg-answer[data-cost]").nth(1).wait_for()  # the billed cost, read back from the request log
    assert answers.count() == 2
    assert "12 in · 5 out" in answers.nth(0).inner_text() and "cost $0.0000" in answers.nth(0).inner_text()
    snippet = page.get_by_label("Code snippet").inner_text()
    assert 'model="gpt-4o-mini"' in snippet and "Answer in one sentence." in snippet and "base_url" in snippet
    page.get_by_role("tab", name="curl").click()
    assert "curl " in page.get_by_label("Code snippet").inner_text()
    shoot(page, "user-playground")


def test_a_tour_of_the_console_with_a_week_of_history(page, gw, showcase):
    sign_in(page, gw, SHOWCASE, PASSWORD)
    page.get_by_role("heading", name="Home").wait_for()
    shoot(page, "user-home")
    page.goto(gw.url + "/keys/")
    page.get_by_role("link", name="production").wait_for()
    shoot(page, "user-keys")
    page.get_by_role("link", name="production").click()
    page.get_by_role("heading", name="Last 30 days").wait_for()
    shoot(page, "user-key-detail")
    page.goto(gw.url + "/usage/?range=7d&by=model")
    page.locator("canvas[data-ready]").wait_for()
    shoot(page, "user-usage")
    page.goto(gw.url + "/billing/ledger")
    shoot(page, "user-ledger")
    page.goto(gw.url + "/organisation")
    page.get_by_label("Organisation name").fill("Maria's Lab")
    page.get_by_role("button", name="Create organisation").click()
    page.get_by_label("Email").fill("teammate@example.com")
    page.get_by_role("button", name="Invite").click()
    page.get_by_label("Invitation link (works once, for 7 days)").wait_for()
    shoot(page, "user-organisation")
    page.goto(gw.url + "/account")
    shoot(page, "user-account")
    page.context.clear_cookies()
    page.goto(gw.url + "/models")
    page.get_by_role("cell", name="o3-mini").wait_for()
    assert page.get_by_text("From ").first.is_visible()  # the scheduled gpt-4o change
    shoot(page, "user-models")
