"""The cost of every request where the caller sees it, and the caller's own API (generation, key,
legacy billing), through the real relay on a real socket, real Redis and fake upstreams."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
import requests

from relay import pricing
from relay.settings import Timeouts
from tests import factories
from tests.fakes.anthropic_server import AnthropicReply, FakeAnthropic
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.relay_harness import Relay, events_of, request_log

SMALL_CHAT = 111  # the OpenAI fake's default usage (12 in, 5 out) at $3 / $15 per 1M tokens, in µ$
CLAUDE = pricing.cost(pricing.Usage(input=20, output=5), pricing.Price("claude-x", 3_000_000, 15_000_000), 10_000)
FUNDS = 10_000_000
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
MESSAGES = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "Say hello"}]}


@pytest.fixture(scope="module")
def upstreams():
    openai, anthropic = FakeOpenAI(models=["gpt-4o-mini", "text-embedding-3-small"]), FakeAnthropic()
    yield openai, anthropic
    openai.close()
    anthropic.close()


@dataclass
class World:
    url: str
    key: str
    key_id: int
    relay: Relay

    def call(self, method: str, path: str, body: dict | None = None, key: str | None = None, **params):
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return requests.request(method, self.url + path, json=body, params=params or None, headers=headers, timeout=10)


@pytest.fixture
def world(app, upstreams):
    openai, anthropic = upstreams
    for price in (("gpt-4o-mini", "3", "15"), ("claude-x", "3", "15"), ("text-embedding-3-small", "0.02", "0")):
        factories.price(price[0], input=price[1], output=price[2])
    user = factories.funded_user("10")
    row, secret = factories.api_key(user, credit_limit_usd="5", daily_budget_usd="1")
    factories.channel(openai.url, models=("gpt-4o-mini", "text-embedding-3-small"), keys_=("sk-up-1",))
    factories.channel(anthropic.url, models=("claude-x",), keys_=("sk-ant-1",), type="anthropic")
    relay = Relay(app, timeouts=Timeouts(connect=1.0, first_byte=3.0, idle=2.0, total=8.0))
    with relay.served() as (host, port):
        yield World(f"http://{host}:{port}", secret, row.id, relay)


# --- the charge in every answer -------------------------------------------------------------------
def test_a_whole_answer_carries_its_charge_in_a_header_and_in_its_usage(world):
    chat = world.call("POST", "/v1/chat/completions", CHAT)
    assert chat.headers["x-switchboard-cost-micro-usd"] == str(SMALL_CHAT)
    assert chat.json()["usage"]["cost"] == SMALL_CHAT / 1e6 and chat.json()["usage"]["cost_micro_usd"] == SMALL_CHAT
    assert chat.json()["usage"]["prompt_tokens"] == 12  # the upstream's own fields are untouched
    message = world.call("POST", "/v1/messages", MESSAGES)
    assert message.headers["x-switchboard-cost-micro-usd"] == str(CLAUDE) and message.json()["usage"]["cost_micro_usd"] == CLAUDE
    embedding = world.call("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"})
    cost = int(embedding.headers["x-switchboard-cost-micro-usd"])
    assert embedding.json()["usage"]["cost_micro_usd"] == cost == request_log(embedding.headers["x-request-id"]).cost


def test_a_stream_reports_its_charge_in_the_event_with_the_final_usage(world, upstreams):
    upstreams[0].push(Behaviour(content="one two three"))
    reply = world.call("POST", "/v1/chat/completions", dict(CHAT, stream=True, stream_options={"include_usage": True}))
    usage = events_of(reply.content)[-2]["usage"]
    charged = request_log(reply.headers["x-request-id"]).cost
    assert usage["cost_micro_usd"] == charged and usage["cost"] == charged / 1e6 and usage["completion_tokens"] == 3
    assert "x-switchboard-cost-micro-usd" not in reply.headers  # the headers left before the cost was known

    upstreams[1].push(AnthropicReply(text="Hi there"))
    reply = world.call("POST", "/v1/messages", dict(MESSAGES, stream=True))
    blocks = [b for b in reply.content.split(b"\n\n") if b.startswith(b"event: message_delta")]
    delta = events_of(blocks[0].split(b"\n", 1)[1] + b"\n\n")[0]
    assert delta["usage"]["cost_micro_usd"] == request_log(reply.headers["x-request-id"]).cost > 0


# --- GET /v1/generation -----------------------------------------------------------------------------
def test_a_request_is_described_to_the_key_that_made_it_only(world):
    chat = world.call("POST", "/v1/chat/completions", CHAT)
    rid = chat.headers["x-request-id"]
    found = world.call("GET", "/v1/generation", id=rid)
    assert found.status_code == 200
    data = found.json()["data"]
    assert (data["id"], data["model"], data["status"], data["streamed"], data["cancelled"]) == (rid, "gpt-4o-mini", 200, False, False)
    assert (data["tokens_prompt"], data["tokens_completion"], data["tokens"]["input"], data["tokens"]["output"]) == (12, 5, 12, 5)
    assert (data["cost_micro_usd"], data["total_cost"], data["usage_source"]) == (SMALL_CHAT, SMALL_CHAT / 1e6, "upstream")
    assert data["latency"] >= 0 and data["ttft"] == data["latency"] and "channel_id" not in data and "trace" not in data

    other_user = factories.funded_user("1")
    _, other_key = factories.api_key(other_user)
    world.relay.app.holder.refresh()
    theirs = world.call("GET", "/v1/generation", key=other_key, id=rid)
    unknown = world.call("GET", "/v1/generation", id="req_" + "0" * 24)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "generation_not_found"
    assert world.call("GET", "/v1/generation").status_code == 400
    assert world.call("GET", "/v1/generation", **{f"p{i}": "x" for i in range(20)}).status_code == 400
    assert world.call("GET", "/v1/generation", key="sk-wrong", id=rid).status_code == 401


def test_a_stream_is_described_with_its_time_to_first_token(world):
    reply = world.call("POST", "/v1/chat/completions", dict(CHAT, stream=True))
    data = world.call("GET", "/v1/generation", id=reply.headers["x-request-id"]).json()["data"]
    assert data["streamed"] is True and data["ttft"] is not None and data["ttft"] <= data["latency"]
    assert data["cost_micro_usd"] == request_log(reply.headers["x-request-id"]).cost


# --- GET /v1/key and the legacy billing endpoints ------------------------------------------------------
def test_the_key_reports_its_limit_spend_budgets_and_what_is_left(world):
    world.call("POST", "/v1/chat/completions", CHAT)
    data = world.call("GET", "/v1/key").json()["data"]
    assert (data["limit"], data["usage"], data["usage_daily"], data["usage_monthly"]) == (5.0, SMALL_CHAT / 1e6, SMALL_CHAT / 1e6, SMALL_CHAT / 1e6)
    assert data["usage_weekly"] == SMALL_CHAT / 1e6
    micro = data["micro_usd"]
    assert micro["limit_remaining"] == 5_000_000 - SMALL_CHAT and micro["balance"] == FUNDS - SMALL_CHAT
    assert data["budgets"]["daily"]["remaining_micro_usd"] == 1_000_000 - SMALL_CHAT and data["budgets"]["monthly"] is None
    assert micro["remaining"] == 1_000_000 - SMALL_CHAT  # the daily budget is the tightest
    assert data["rate_limits"]["key"] is None and data["is_free_tier"] is False
    assert world.call("GET", "/v1/auth/key").json() == world.call("GET", "/v1/key").json()
    assert world.call("POST", "/v1/key").status_code == 405
    assert world.call("GET", "/v1/key", key="sk-wrong").status_code == 401


def test_the_legacy_billing_endpoints_give_front_ends_the_balance(world):
    world.call("POST", "/v1/chat/completions", CHAT)
    subscription = world.call("GET", "/v1/dashboard/billing/subscription").json()
    remaining = (1_000_000 - SMALL_CHAT) / 1e6
    assert subscription["object"] == "billing_subscription" and subscription["hard_limit_usd"] == pytest.approx(SMALL_CHAT / 1e6 + remaining)
    today = dt.datetime.now(dt.UTC).date()
    month_start = today.replace(day=1)
    usage = world.call("GET", "/v1/dashboard/billing/usage", start_date=month_start.isoformat(),
                       end_date=(today + dt.timedelta(days=1)).isoformat()).json()
    assert usage["total_usage"] == SMALL_CHAT / 10_000 and usage["total_usage_micro_usd"] == SMALL_CHAT
    # What NextChat shows as the balance: the hard limit less this month's usage.
    assert subscription["hard_limit_usd"] - usage["total_usage"] / 100 == pytest.approx(remaining)
    before = world.call("GET", "/v1/dashboard/billing/usage", start_date="2020-01-01", end_date="2020-02-01").json()
    assert before["total_usage"] == 0 and before["daily_costs"] == []
    for params in ({"start_date": "2020-01-01"}, {"start_date": "x", "end_date": "2020-01-02"},
                   {"start_date": "2020-01-02", "end_date": "2020-01-01"}, {"start_date": "2020-01-01", "end_date": "2020-06-01"}):
        assert world.call("GET", "/v1/dashboard/billing/usage", **params).status_code == 400
