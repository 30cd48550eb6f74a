"""The public status page in a real browser against a real `switchboard up`: requests through the
relay become uptime and latency figures; an operator writes an incident in the console and shows a
group; anyone, signed out, reads both — and never a channel's name or address."""
from __future__ import annotations

import re

import openai
import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import shoot, sign_in
from relay import redis_keys
from tests.browser.seed import gateway_redis, wait_for_ingestion
from tests.fakes.openai_server import Behaviour

pytestmark = pytest.mark.browser
MODEL = "status-chat-1"
CHANNEL = "Reseller Acme EU"


def test_an_operator_writes_an_incident_and_everyone_reads_it(page, live, browser):
    live.cli("demo", "seed")  # a fresh instance only: this test runs first
    sign_in(page, live)
    page.get_by_role("navigation", name="Operator console").get_by_role("link", name="Status page").click()
    expect(page.get_by_role("heading", name="Status page", exact=True)).to_be_visible()
    expect(page.get_by_role("rowheader").filter(has_text="OpenAI primary")).to_be_visible()  # operators see channels
    page.get_by_label("Title").fill("Slow answers from gpt-4o")
    page.get_by_label("Impact").select_option("degraded")
    page.get_by_label("Note").fill("A provider is slow; requests succeed but take longer.")
    page.get_by_label("Models").fill("gpt-4o")
    page.get_by_role("button", name="Save incident").click()
    expect(page.get_by_text("is on the status page")).to_be_visible()
    page.get_by_role("button", name="Show pro").click()
    page.get_by_role("button", name="Show", exact=True).click()  # the confirmation: the group's name becomes public
    expect(page.get_by_text("Group pro is on the status page.")).to_be_visible()
    shoot(page, "admin-status")

    visitor = browser.new_context(viewport={"width": 1280, "height": 800})
    public = visitor.new_page()
    public.goto(live.url + "/status")
    expect(public.get_by_role("status")).to_contain_text("Some models are not being served.")  # the seed's Groq channel is down
    incident = public.get_by_role("article").filter(has_text="Slow answers from gpt-4o")
    expect(incident).to_contain_text("Degraded")
    expect(incident).to_contain_text("A provider is slow")
    expect(public.get_by_role("row").filter(has_text="gpt-4o-mini").first).to_contain_text("%")
    expect(public.get_by_role("heading", name="Group pro")).to_be_visible()
    text = public.content()
    for private in ("OpenAI primary", "api.openai.com", "Lab vLLM", "vllm.lab.internal", "Group trial"):
        assert private not in text, private
    shoot(public, "status")
    visitor.close()


def test_requests_through_the_relay_become_the_public_figures(page, live, upstream):
    live.cli("channel", "add", "--name", CHANNEL, "--type", "openai", "--base-url", upstream.url, "--keys", "sk-upstream-1",
             "--models", MODEL)
    live.cli("price", "set", MODEL, "--input", "1", "--output", "2", "--now")
    live.cli("user", "create", "--email", "status@customer.example")
    live.cli("topup", "--user", "status@customer.example", "--usd", "5", "--reason", "test")
    key = live.cli("key", "create", "--user", "status@customer.example")["key"]
    client = openai.OpenAI(base_url=live.base_url, api_key=key, max_retries=0, timeout=20)
    for _ in range(3):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    upstream.push(Behaviour(status=500))
    with pytest.raises(openai.APIError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    wait_for_ingestion(live)
    gateway_redis(live).delete(redis_keys.STATUS_PAGE)  # the page built by the test before, a minute old at most

    page.goto(live.url + "/status")  # signed out
    expect(page.get_by_role("heading", name="Service status")).to_be_visible()
    row = page.get_by_role("table", name=re.compile("^Every model")).get_by_role("row").filter(has_text=MODEL)
    expect(row).to_contain_text("Operational")
    expect(row).to_contain_text("75.00%")  # 3 of 4 answered; the 500 counts against uptime
    expect(row).to_contain_text("25.00%")  # error rate
    body = page.content()
    assert CHANNEL not in body and upstream.url not in body
    doc = requests.get(live.url + "/status.json", timeout=10).json()
    day = next(m for m in doc["models"] if m["id"] == MODEL)["windows"]["24h"]
    assert (day["requests"], day["uptime"]) == (4, 0.75) and day["latency_p95_ms"] is not None
