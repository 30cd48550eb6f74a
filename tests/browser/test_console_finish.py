"""What a newcomer meets in both consoles, in a real browser against a real `switchboard up`: money
that is below a cent reads as itself, and the places a first-time operator or customer used to trip."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from playwright.sync_api import expect

from relay.usage import USAGE_STREAMS, UsageEvent
from tests.browser.conftest import shoot, sign_in
from tests.browser.seed import gateway_redis, wait_for_ingestion
from tests.gateway import ROOT, Gateway

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    gateway = Gateway(tmp_path_factory.mktemp("console-finish"), {"SWITCHBOARD_SIGNUP": "open"})
    gateway.cli("channel", "add", "--name", "fake-openai", "--type", "openai", "--base-url", upstream.url, "--keys", "sk-upstream-1",
                "--models", "gpt-4o-mini")
    gateway.cli("price", "set", "gpt-4o-mini", "--input", "0.15", "--output", "0.60", "--now")
    yield gateway
    gateway.stop()


def usage_event(user: dict, key_id: int, cost: int, **extra) -> UsageEvent:
    now = time.time()
    fields = dict(request_id="req_" + uuid.uuid4().hex[:24], started_at=now - 1, finished_at=now, endpoint="/v1/chat/completions",
                  status=200, api_key_id=key_id, account_id=user["account_id"], user_id=user["id"], model="gpt-4o-mini", channel_id=1,
                  stream=False, input_tokens=500, output_tokens=50, cost=cost, latency_ms=420, ttft_ms=180, client_ip="203.0.113.7")
    return UsageEvent(**{**fields, **extra})


def ingest(gw, *events: UsageEvent) -> None:
    r = gateway_redis(gw)
    for e in events:
        r.xadd(USAGE_STREAMS[0], {"e": e.encode()})
    wait_for_ingestion(gw)


def test_sub_cent_money_reads_as_itself_with_the_exact_amount_on_hover(page, gw):
    user = gw.cli("user", "create", "--email", "penny@example.com", "--password", PASSWORD)
    gw.cli("topup", "--user", "penny@example.com", "--usd", "0.001", "--reason", "a tenth of a cent")
    key = gw.cli("key", "create", "--user", "penny@example.com", "--name", "tiny")
    ingest(gw, usage_event(user, key["id"], 105))
    sign_in(page, gw, "penny@example.com", PASSWORD)

    page.goto(gw.url + "/usage/")
    spend = page.locator(".card").filter(has_text="Spend").locator(".money").first
    expect(spend).to_have_text("$0.000105")
    expect(spend).to_have_attribute("title", "$0.000105 (105 µ$)")
    canvas = page.locator("canvas[data-ready]")
    expect(canvas).to_be_visible()
    ticks = page.evaluate("() => window.Chart.getChart(document.querySelector('canvas[data-ready]')).scales.y.ticks.map(t => t.label)")
    assert ticks[0] == "$0.00" and all(t != "$0.00" for t in ticks[1:]), ticks  # only the zero line reads as zero

    page.goto(gw.url + "/billing/")
    receipt = page.get_by_role("row").filter(has_text="Top-up")
    expect(receipt).to_contain_text("$0.001")
    balance = page.locator(".topbar .balance .money")  # the live balance: the event above came without the relay's settle
    expect(balance).to_have_text("$0.001")
    expect(balance).to_have_attribute("title", "$0.001000 (1,000 µ$)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's demo: `db upgrade`, `demo seed`, `up` on a fresh instance; with the operator
    `demo seed` printed."""
    instance = tmp_path_factory.mktemp("readme-demo")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")} | {"SWITCHBOARD_INSTANCE": str(instance)}
    for args in (["db", "upgrade"], ["demo", "seed"]):
        done = subprocess.run([sys.executable, "-m", "controlplane", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    shown = [line for line in done.stdout.splitlines() if line.startswith("Demo operator (shown once): ")]
    assert len(shown) == 1, done.stdout
    email, _, password = shown[0].split(": ", 1)[1].partition(" / ")
    gateway = Gateway(instance)
    gateway.demo_operator = (email, password)
    yield gateway
    gateway.stop()


def test_the_readme_demo_can_be_signed_into(page, demo):
    assert not any("First operator" in line for line in demo.output)  # the instance has operators already
    sign_in(page, demo, *demo.demo_operator)
    expect(page.get_by_role("navigation", name="Operator console")).to_be_visible()
    page.goto(demo.url + "/admin/users/")
    expect(page.get_by_role("link", name="ana@acme.dev", exact=True)).to_be_visible()


LINES_OF = """(el) => { const r = document.createRange(); r.selectNodeContents(el);
    return new Set(Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => Math.round(x.top))).size; }"""


def lines_of(locator) -> list[tuple[str, int]]:
    return [(locator.nth(i).inner_text(), locator.nth(i).evaluate(LINES_OF)) for i in range(locator.count())]


def test_pages_fit_1280_and_names_stay_on_one_line(page, demo):
    long_email = "procurement.team.lead@research-institute.example-university.edu"
    user = demo.cli("user", "create", "--email", long_email, "--password", PASSWORD)
    key = demo.cli("key", "create", "--user", long_email, "--name", "notebook")
    ingest(demo, usage_event(user, key["id"], 2_345, model="acme-org/llama-3.3-70b-instruct-finetuned-support-2025-11-30-preview",
                             status=502, error_code="upstream_error", channel_id=4))
    sign_in(page, demo, *demo.demo_operator)
    page.goto(demo.url + "/admin/logs/")
    expect(page.get_by_role("cell", name=long_email)).to_be_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280  # no sideways scrolling

    page.goto(demo.url + "/admin/prices/")
    assert all(n == 1 for _, n in lines_of(page.locator("table tbody tr td:first-child"))), lines_of(page.locator("table tbody tr td:first-child"))
    for width in (1280, 1024):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(demo.url + "/admin/dashboard/")
        counts = lines_of(page.locator("ul.counts li"))
        assert counts and all(n == 1 for _, n in counts), (width, counts)
    page.set_viewport_size({"width": 1280, "height": 800})

    icon = page.request.get(demo.url + "/favicon.ico")
    assert icon.status == 200 and icon.body()[:4] == b"\x00\x00\x01\x00"  # an ICO, not the 404 page


def test_the_decision_trace_is_a_timeline(page, demo):
    sign_in(page, demo, *demo.demo_operator)
    page.goto(demo.url + "/admin/logs/?model=gpt-4o-mini")
    page.get_by_role("link", name=re.compile("^req_")).first.click()
    expect(page.get_by_role("heading", name="Decision trace")).to_be_visible()
    steps = page.locator("ol.timeline > li")
    expect(steps.first).to_contain_text("Candidates")
    text = page.locator("ol.timeline").inner_text()
    assert "Attempt 1 on" in text and "=" not in text and "None" not in text, text


def test_the_invite_button_keeps_its_width(page, gw):
    gw.cli("user", "create", "--email", "owner@example.com", "--password", PASSWORD)
    sign_in(page, gw, "owner@example.com", PASSWORD)
    page.goto(gw.url + "/organisation")
    page.get_by_label("Organisation name").fill("Acme")
    page.get_by_role("button", name="Create organisation").click()
    invite = page.get_by_role("button", name="Invite", exact=True)
    expect(invite).to_be_visible()
    email_box = page.get_by_label("Email").bounding_box()
    button = invite.bounding_box()
    assert button["width"] < 150 and button["width"] < email_box["width"], (button, email_box)


def customer(gw, email: str) -> tuple[dict, int]:
    """A customer with $5 and a new key."""
    user = gw.cli("user", "create", "--email", email, "--password", PASSWORD)
    gw.cli("topup", "--user", email, "--usd", "5", "--reason", "first top-up")
    key = gw.cli("key", "create", "--user", email, "--name", "first key")
    return user, key["id"]


def test_the_latency_chart_draws_an_hour_that_is_alone(page, gw):
    user, key_id = customer(gw, "lone@example.com")
    ingest(gw, usage_event(user, key_id, 1_000, latency_ms=640, ttft_ms=210))
    sign_in(page, gw)
    page.goto(gw.url + "/admin/dashboard/?range=day")
    page.wait_for_function("() => window.Chart && Object.keys(window.Chart.instances).length >= 4")
    radii = page.evaluate("""() => {
        const chart = window.Chart.getChart(document.querySelector('canvas[data-chart="latency"]'));
        const data = chart.data.datasets[0].data;
        return data.map((v, i) => [v, chart.getDatasetMeta(0).data[i].options.radius]);
    }""")
    drawn = [(value, radius) for value, radius in radii if value is not None]
    assert drawn and all(radius > 0 for _, radius in drawn), radii  # one hour of data: a visible dot, not nothing


def test_test_now_answers_in_place_and_test_all_fills_the_last_test_column(page, gw, upstream):
    gw.cli("channel", "add", "--name", "second-openai", "--type", "openai", "--base-url", upstream.url, "--keys", "sk-upstream-2",
           "--models", "gpt-4o-mini")
    sign_in(page, gw)
    page.goto(gw.url + "/admin/channels/")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="fake-openai", exact=True))
    row.get_by_role("button", name="Test now").click()
    expect(row.get_by_role("cell").filter(has_text="passed")).to_contain_text(" ms")
    assert page.url.endswith("/admin/channels/")  # answered in place, not on a separate page

    second = page.get_by_role("row").filter(has=page.get_by_role("link", name="second-openai", exact=True))
    page.get_by_role("button", name="Test all channels").click()
    expect(page.get_by_text("Testing every enabled and auto-disabled channel now")).to_be_visible()
    deadline = time.time() + 60
    while "never" in second.inner_text():  # the probe worker runs the check; each row fills in as it finishes
        assert time.time() < deadline, second.inner_text()
        time.sleep(1)
        page.reload()
    assert re.search(r"\d+ ms", second.inner_text())


def test_the_playground_keeps_the_whole_conversation(page, gw):
    customer(gw, "chatter@example.com")
    sign_in(page, gw, "chatter@example.com", PASSWORD)
    page.goto(gw.url + "/playground/")
    expect(page.get_by_label("Model 2", exact=True)).to_be_hidden()  # one model in chat mode
    page.get_by_label("System prompt").fill("Answer briefly.")
    conversation = page.get_by_role("region", name="Conversation")
    for turn, question in enumerate(("What is a gateway?", "And a relay?"), start=1):
        page.get_by_label("Message").fill(question)
        page.get_by_role("button", name="Run").click()
        expect(conversation.locator(".pg-answer")).to_have_count(turn)
        expect(conversation.locator(".pg-answer").nth(turn - 1)).to_contain_text("Hello from the fake upstream.")
        expect(page.get_by_text("Done.")).to_be_visible()
        if turn == 1:
            page.get_by_label("System prompt").fill("Answer in one word.")  # edited between turns
    expect(conversation.locator(".pg-user .text")).to_have_text(["What is a gateway?", "And a relay?"])
    conversation.locator(".pg-answer[data-cost]").nth(1).wait_for()  # the billed cost, read back from the request log
    conversation.locator(".pg-answer").nth(1).scroll_into_view_if_needed()
    shoot(page, "user-playground-conversation")
    snippet = page.get_by_label("Code snippet").inner_text()
    for said in ("Answer in one word.", "What is a gateway?", "And a relay?", "Hello from the fake upstream."):
        assert said in snippet, said
    assert snippet.count('"role": "assistant"') == 2 and "Answer briefly." not in snippet
    page.get_by_role("button", name="Clear conversation").click()
    expect(conversation.locator(".pg-turn, .pg-answer")).to_have_count(0)
    page.get_by_label("Compare models").check()
    expect(page.get_by_label("Model 2", exact=True)).to_be_visible()


def test_the_admin_api_reference_is_interactive_and_served_locally(page, gw):
    foreign: list[str] = []
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(gw.url) and not r.url.startswith("data:") else None)
    sign_in(page, gw)
    page.get_by_role("navigation", name="Operator console").get_by_role("link", name="API reference").click()
    expect(page).to_have_url(gw.url + "/admin/api/docs")
    operation = page.locator(".opblock").filter(has_text="Add money to a user's balance")
    expect(operation).to_be_visible(timeout=30_000)  # Swagger UI parses a 1.4 MB bundle first: slow on a loaded CI machine
    shoot(page, "admin-api-docs")
    operation.locator(".opblock-summary").first.click()
    expect(operation.get_by_role("button", name="Try it out")).to_be_visible()
    page.get_by_role("button", name="Authorize").first.click()
    expect(page.get_by_text("operatorToken")).to_be_visible()
    assert foreign == [], foreign  # nothing from a CDN, nothing to a validator


def test_the_customer_api_page_shows_code_that_runs_against_this_gateway(page, gw, tmp_path):
    _, _ = customer(gw, "builder@example.com")
    secret = gw.cli("key", "create", "--user", "builder@example.com", "--name", "sample")["key"]
    sign_in(page, gw, "builder@example.com", PASSWORD)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="API").click()
    expect(page.get_by_label("Base URL")).to_have_text(gw.base_url)
    for path in ("/generation?id=", "/key", "/dashboard/billing/subscription", "/dashboard/billing/usage"):
        expect(page.get_by_role("cell").filter(has_text=gw.base_url + path).first).to_be_visible()
    for language in ("Python", "JavaScript", "curl"):
        assert gw.base_url in page.get_by_label(f"{language} example").inner_text()
    shoot(page, "user-api")
    sample = tmp_path / "sample.py"
    sample.write_text(page.get_by_label("Python example").inner_text())
    ran = subprocess.run([sys.executable, str(sample)], env={**os.environ, "SWITCHBOARD_API_KEY": secret}, capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "Hello from the fake upstream." in ran.stdout and "'cost_micro_usd': 5" in ran.stdout and "limit_remaining" in ran.stdout, ran.stdout


def test_the_playground_prices_an_image_run_before_sending_and_shows_the_images(page, gw, upstream):
    gw.cli("channel", "add", "--name", "fake-images", "--type", "openai", "--base-url", upstream.url, "--keys", "sk-upstream-img",
           "--models", "gpt-image-1")
    gw.cli("price", "set", "gpt-image-1", "--image-prices", '{"1024x1024/standard": "0.04", "1024x1024/hd": "0.08", "1792x1024/hd": "0.12"}',
           "--now")
    customer(gw, "painter@example.com")
    sign_in(page, gw, "painter@example.com", PASSWORD)
    page.goto(gw.url + "/playground/")
    expect(page.get_by_label("Size")).to_be_hidden()  # a chat model first
    page.get_by_label("Model", exact=True).select_option("gpt-image-1")
    expect(page.get_by_label("Temperature")).to_be_hidden()
    page.get_by_label("Size").select_option("1024x1024")
    page.get_by_label("Quality").select_option("hd")
    page.get_by_label("Number of images").fill("2")
    expect(page.get_by_label("Price of this run")).to_have_text("$0.16 for 2 images")  # priced before sending
    page.get_by_label("Message").fill("A lighthouse at dusk")
    page.get_by_role("button", name="Run").click()
    conversation = page.get_by_role("region", name="Conversation")
    expect(conversation.get_by_role("img", name=re.compile("for: A lighthouse at dusk"))).to_have_count(2)
    answer = conversation.locator(".pg-answer[data-cost]")
    expect(answer).to_have_attribute("data-cost", "160000")  # billed what was quoted


def test_a_refund_and_a_ban_are_explained_to_the_customer(page, browser, gw):
    user, key_id = customer(gw, "told@example.com")
    charged = usage_event(user, key_id, 42_000)
    ingest(gw, charged)
    sign_in(page, gw)  # the operator refunds the request, then bans the customer
    page.goto(gw.url + f"/admin/refunds/?request_id={charged.request_id}")
    refund = page.get_by_role("region", name="Refund a request", exact=True)
    refund.get_by_label("Reason").fill("Answer was cut off by an upstream fault")
    refund.get_by_role("button", name="Refund request", exact=True).click()
    page.get_by_role("button", name=re.compile(r"^Refund \$")).click()
    page.goto(gw.url + f"/admin/refunds/?request_id={charged.request_id}")
    expect(page.get_by_role("region", name="Refund a request", exact=True).get_by_role("button", name="Look up")).to_be_visible()
    expect(page.get_by_role("button", name="Refund request", exact=True)).to_have_count(0)  # refunded once, offered once
    page.goto(gw.url + f"/admin/users/{user['id']}")
    ban = page.get_by_role("region", name="Ban", exact=True)
    ban.get_by_label("Reason").fill("Card chargeback under review")
    ban.get_by_role("button", name="Ban user").click()
    expect(page.get_by_text("The gateway refuses their API calls within seconds.")).to_be_visible()
    page.get_by_role("button", name="Ban user").click()  # confirmed
    expect(page.get_by_role("heading", name="Banned")).to_be_visible()

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    customer_page = context.new_page()
    sign_in(customer_page, gw, "told@example.com", PASSWORD)
    expect(customer_page.get_by_role("alert")).to_contain_text("Your account is suspended: Card chargeback under review")
    customer_page.goto(gw.url + "/billing/ledger")
    row = customer_page.get_by_role("row").filter(has_text="refund")
    expect(row).to_contain_text("Answer was cut off by an upstream fault")
    context.close()


def test_a_first_price_starts_now_and_the_form_says_so(page, gw):
    sign_in(page, gw)
    page.goto(gw.url + "/admin/prices/?model=brand-new-model")
    form = page.get_by_role("region", name="Set a price")
    expect(form.get_by_role("note")).to_contain_text("brand-new-model has no price yet: its first price starts now")
    expect(form.get_by_label("Effective from (UTC)")).to_have_value("")
    form.get_by_label(re.compile("^Input ")).fill("1")
    form.get_by_label(re.compile("^Output ")).fill("2")
    form.get_by_role("button", name="Save price").click()
    expect(page.get_by_text("Price for brand-new-model saved; it applies now.")).to_be_visible()
    page.goto(gw.url + "/admin/prices/?model=brand-new-model")
    expect(page.get_by_role("note")).to_contain_text("brand-new-model has a price: this is a change, so it takes effect after 7 days' notice")


def test_an_operator_creates_a_key_for_a_customer(page, gw):
    user, _ = customer(gw, "handed@example.com")
    sign_in(page, gw)
    page.goto(gw.url + f"/admin/users/{user['id']}")
    form = page.get_by_role("region", name="Create a key for handed@example.com")
    form.get_by_label("Key name").fill("their server")
    form.get_by_label("Credit limit (USD)").fill("3")
    form.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New API key").input_value()
    assert re.fullmatch(r"sk-sb-[A-Za-z0-9]{40}", secret)
    expect(page.get_by_role("alert")).to_contain_text("it will not be shown again")
    gw.wait_for_relay()
    import openai

    reply = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0, timeout=20).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Hello from the fake upstream."
