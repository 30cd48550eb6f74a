"""The operator console in a real browser against a real `switchboard up`.

First the demo seed fills the instance with a realistic week (several channels of different types
and states, traffic across models, refunds, bans) and every area is screenshotted into
docs/screenshots/. Then an operator's day, end to end: create a channel with keys, price a model,
add and top up a customer, who calls the relay with the openai SDK; find the request in the logs,
refund it and see the balance restored, ban the customer and see the relay answer 403, export CSV.
"""
from __future__ import annotations

import csv
import io
import re
import time

import openai
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import shoot, sign_in

pytestmark = pytest.mark.browser
MODEL = "fake-chat-1"
CUSTOMER = "ana@customer.example"
AREAS = [  # (screenshot, path, a heading the page must show)
    ("dashboard", "/admin/dashboard/?range=7d", "Dashboard"),  # saved as docs/screenshots/admin-<area>.png
    ("channels", "/admin/channels/", "Channels"),
    ("prices", "/admin/prices/", "Model prices"),
    ("groups", "/admin/groups/", "Groups"),
    ("users", "/admin/users/", "Users"),
    ("organisations", "/admin/organisations/", "Organisations"),
    ("bans", "/admin/bans/", "Bans"),
    ("refunds", "/admin/refunds/", "Refunds"),
    ("logs", "/admin/logs/", "Request logs"),
    ("audit", "/admin/audit/", "Audit log"),
    ("operators", "/admin/operators/", "Operators"),
    ("tokens", "/admin/tokens/", "API tokens"),
]


def test_every_area_on_a_seeded_week(page, live):
    seeded = live.cli("demo", "seed")
    assert seeded["requests"] > 1000 and seeded["channels"] >= 5
    sign_in(page, live)
    for area, path, heading in AREAS:
        page.goto(live.url + path)
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        if area == "dashboard":
            page.wait_for_function("() => window.Chart && Object.keys(window.Chart.instances).length >= 4")
        shoot(page, f"admin-{area}")
    page.goto(live.url + "/admin/channels/")
    page.get_by_role("link", name="OpenAI primary", exact=True).click()
    expect(page.get_by_role("cell", name="upstream said: Incorrect API key provided", exact=True)).to_be_visible()
    shoot(page, "admin-channel")
    page.goto(live.url + "/admin/users/")
    page.get_by_role("link", name="ana@acme.dev", exact=True).click()
    expect(page.get_by_role("heading", name="Ledger")).to_be_visible()
    shoot(page, "admin-user")
    page.goto(live.url + "/admin/organisations/")
    page.get_by_role("link", name="Acme Labs", exact=True).click()
    expect(page.get_by_role("heading", name="Members")).to_be_visible()
    expect(page.get_by_role("cell", name="acme-notebooks", exact=True)).to_be_visible()
    shoot(page, "admin-organisation")
    page.goto(live.url + "/admin/logs/?status=errors")
    page.get_by_role("link", name=re.compile("^req_")).first.click()
    expect(page.get_by_role("heading", name="Decision trace")).to_be_visible()
    shoot(page, "admin-request")


def sdk(live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.base_url, api_key=key, max_retries=0, timeout=20)


def until(check, timeout: float = 15.0):
    """Retry `check` until it passes: the worker ingests and relays reload within seconds."""
    deadline = time.time() + timeout
    while True:
        try:
            return check()
        except (AssertionError, openai.APIError):
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_an_operators_day_from_channel_to_ban(page, live, upstream):
    sign_in(page, live)
    # A channel with two keys, pointing at the fake upstream.
    page.get_by_role("link", name="Channels", exact=True).click()
    page.get_by_role("link", name="Add channel", exact=True).click()
    page.get_by_label("Name", exact=True).fill("Fake upstream")
    page.get_by_label("Base URL").fill(upstream.url)
    page.get_by_label("Models", exact=True).fill(MODEL)
    page.get_by_label("Upstream keys").fill("sk-browser-key-AAAA\nsk-browser-key-BBBB")
    page.get_by_role("button", name="Save channel", exact=True).click()
    expect(page.get_by_role("heading", name="Fake upstream")).to_be_visible()
    expect(page.get_by_text("••••AAAA")).to_be_visible()
    expect(page.get_by_text("••••BBBB")).to_be_visible()
    expect(page.get_by_role("button", name="Test now", exact=True)).to_be_visible()

    # A price for the model, in force now (a new model needs no notice).
    page.get_by_role("link", name="Prices", exact=True).click()
    form = page.get_by_role("region", name="Set a price", exact=True)
    form.get_by_label("Model", exact=True).fill(MODEL)
    form.get_by_label("Input ($/1M tokens)").fill("1")
    form.get_by_label("Output ($/1M tokens)").fill("2")
    form.get_by_label("Effective from (UTC)").fill("")
    form.get_by_role("button", name="Save price", exact=True).click()
    expect(page.get_by_text(f"Price for {MODEL} saved; it applies now.")).to_be_visible()

    # A customer with $5, and a key made the way a customer would get one.
    page.get_by_role("link", name="Users", exact=True).click()
    page.get_by_role("link", name="Add user", exact=True).click()
    page.get_by_label("Email").fill(CUSTOMER)
    page.get_by_role("button", name="Create user", exact=True).click()
    topup = page.get_by_role("region", name="Top up", exact=True)
    topup.get_by_label("Amount (USD)").fill("5")
    topup.get_by_label("Reason").fill("bank transfer 2291")
    topup.get_by_role("button", name="Top up", exact=True).click()
    expect(page.get_by_text(f"Add $5.00 to {CUSTOMER}?")).to_be_visible()
    page.get_by_role("button", name="Add $5.00", exact=True).click()
    expect(page.get_by_text(f"Added $5.00 to {CUSTOMER}.")).to_be_visible()
    user_page = page.url
    key = live.cli("key", "create", "--user", CUSTOMER, "--name", "browser")["key"]

    # The customer calls the relay; the answer comes from the fake upstream.
    reply = until(lambda: sdk(live, key).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}]))
    request_id = reply.headers["x-request-id"]
    assert reply.parse().choices[0].message.content == "Hello from the fake upstream."

    # The operator finds it in the logs and refunds it; the balance is whole again.
    page.get_by_role("link", name="Logs", exact=True).click()
    page.get_by_label("User").fill(CUSTOMER)
    page.get_by_role("button", name="Filter", exact=True).click()

    def listed():
        page.reload()
        expect(page.get_by_role("link", name=request_id)).to_be_visible(timeout=1_000)

    until(listed)
    page.get_by_role("link", name=request_id).click()
    expect(page.get_by_role("heading", name="Decision trace")).to_be_visible()
    expect(page.get_by_role("listitem").filter(has_text="candidates")).to_contain_text("Fake upstream")
    page.get_by_role("link", name="Refund", exact=True).click()
    refund = page.get_by_role("region", name="Refund a request", exact=True)
    expect(refund.get_by_label("Request id")).to_have_value(request_id)
    refund.get_by_label("Reason").fill("answer did not help")
    refund.get_by_role("button", name="Refund request", exact=True).click()
    expect(page.get_by_text(re.compile(rf"Refund \$0\.\d+ of request {request_id} to {CUSTOMER}\?"))).to_be_visible()
    shoot(page, "admin-refund-confirm")
    page.get_by_role("button", name=re.compile(r"^Refund \$")).click()
    expect(page.get_by_text(f"of {request_id} to {CUSTOMER}.")).to_be_visible()
    page.goto(user_page)
    balance = page.get_by_role("definition").filter(has_text="$5.00").first
    expect(balance).to_be_visible()
    assert live.balance(CUSTOMER)["balance_micro_usd"] == 5_000_000

    # Banned, the customer gets 403 from the relay within seconds.
    ban = page.get_by_role("region", name="Ban", exact=True)
    ban.get_by_label("Reason").fill("card chargeback")
    ban.get_by_role("button", name="Ban user", exact=True).click()
    expect(page.get_by_text(f"Ban {CUSTOMER} until someone lifts the ban?")).to_be_visible()
    page.get_by_role("button", name="Ban user", exact=True).click()
    expect(page.get_by_text(f"{CUSTOMER} is banned.")).to_be_visible()

    def refused():
        with pytest.raises(openai.PermissionDeniedError):
            sdk(live, key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "again"}])

    until(lambda: refused() or True, timeout=10)

    # The log exports as CSV, with the request in it.
    page.get_by_role("link", name="Logs", exact=True).click()
    page.get_by_label("User").fill(CUSTOMER)
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]user="))  # the filtered page, whose export link carries the filter
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV", exact=True).click()
    rows = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
    assert request_id in {r["request_id"] for r in rows}
    assert {r["user_email"] for r in rows} == {CUSTOMER}
