"""Prepaid means prepaid: whatever a request asks for, no balance, key credit limit or budget goes
below zero. The hold counts every choice; the upstream is told to write no more output than the
hold pays for; an upstream that writes more anyway is charged only down to zero.

Real relay in this process, fake OpenAI upstream on a real socket, real Redis and SQL."""
from __future__ import annotations

import concurrent.futures
import itertools
import time
from dataclasses import dataclass

import requests
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane import ledger
from relay import pricing
from relay.quota import Quota, key_day_key
from relay.server import OUTPUT_CAP_HEADER
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.relay_harness import Relay, assert_money_consistent, request_log, steps

# Each test runs with admission in one script and split (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("admission_layout")

LONG = " ".join(f"w{i}" for i in range(5_000))  # 5,000 words: one token each at the fake
PER_OUTPUT_TOKEN = 15  # µ$ at $15 / 1M output tokens


@dataclass
class Customer:
    relay: Relay
    key: str
    account_id: int
    key_id: int

    def balance(self) -> int:
        return ledger.stored_balance(self.account_id)

    def live(self) -> tuple[int, int]:
        return Quota(self.relay.redis).account(self.account_id)


_names = itertools.count()


@pytest.fixture
def relay(sql_app, upstream):
    upstream.reset_log()
    factories.price("gpt-4o-mini", input="3", output="15")
    factories.channel(upstream.url)
    return Relay(sql_app)


def customer(relay: Relay, usd: str, **key_options) -> Customer:
    user = factories.funded_user(usd, email=f"prepaid{next(_names)}@example.com")
    row, secret = factories.api_key(user, **key_options)
    return Customer(relay, secret, user.account_id, row.id)


def chat(c: Customer, **extra):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Write at length"}], **extra}
    c.relay.app.holder.refresh()
    return c.relay.client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {c.key}"}, buffered=True)


def sent_limit(upstream: FakeOpenAI) -> int | None:
    body = upstream.chat_requests()[-1]["body"]
    return body.get("max_completion_tokens") or body.get("max_tokens")


def test_the_hold_counts_every_choice(relay, upstream):
    c = customer(relay, "0.001")
    refused = chat(c, n=8, max_tokens=50)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "insufficient_quota"
    assert upstream.chat_requests() == []
    assert chat(c, n=1, max_tokens=50).status_code == 200
    assert_money_consistent(relay.redis)


def test_without_max_tokens_the_upstream_is_told_what_the_balance_pays_for(relay, upstream):
    upstream.default = Behaviour(content=LONG, follow_limit=True)
    c = customer(relay, "0.01")
    reply = chat(c)
    assert reply.status_code == 200
    cap = int(reply.headers[OUTPUT_CAP_HEADER])
    assert sent_limit(upstream) == cap and 256 <= cap < 10_000 // PER_OUTPUT_TOKEN
    assert reply.json["choices"][0]["finish_reason"] == "length"
    log = request_log(reply.headers["X-Request-Id"])
    assert log.output_tokens == cap and steps(log, "output_cap")[0]["tokens"] == cap and log.cost <= steps(log, "output_cap")[0]["reserved"]
    assert c.balance() >= 0 and c.live()[0] == c.balance()
    assert_money_consistent(relay.redis)


def test_a_max_tokens_the_balance_covers_goes_up_unchanged_and_no_header(relay, upstream):
    upstream.default = Behaviour(content=LONG, follow_limit=True)
    c = customer(relay, "10")
    reply = chat(c, max_completion_tokens=40)
    assert reply.status_code == 200 and OUTPUT_CAP_HEADER not in reply.headers
    body = upstream.chat_requests()[-1]["body"]
    assert body["max_completion_tokens"] == 40 and "max_tokens" not in body


def test_a_larger_max_tokens_than_the_key_limit_covers_is_lowered(relay, upstream):
    upstream.default = Behaviour(content=LONG, follow_limit=True)
    c = customer(relay, "10", credit_limit_usd="0.006")
    reply = chat(c, max_tokens=100_000, stream=True)
    assert reply.status_code == 200
    cap = int(reply.headers[OUTPUT_CAP_HEADER])
    assert sent_limit(upstream) == cap < 6_000 // PER_OUTPUT_TOKEN
    log = request_log(reply.headers["X-Request-Id"])
    assert log.cost <= 6_000
    assert_money_consistent(relay.redis)


def test_a_balance_that_cannot_pay_for_a_minimal_answer_is_refused(relay, upstream):
    c = customer(relay, "0.001")  # 1,000 µ$: under 256 output tokens at 15 µ$ each
    assert chat(c).status_code == 403
    assert upstream.chat_requests() == []


def test_an_upstream_that_ignores_the_limit_is_charged_down_to_zero_not_below(relay, upstream):
    upstream.default = Behaviour(content=LONG)  # writes 5,000 tokens whatever it is told
    c = customer(relay, "0.01")
    reply = chat(c)
    assert reply.status_code == 200
    log = request_log(reply.headers["X-Request-Id"])
    assert c.balance() == 0 and c.live() == (0, 0)
    assert log.cost == 10_000 and steps(log, "charge_cut")[0]["cost"] > 10_000
    assert_money_consistent(relay.redis)


def test_a_daily_budget_never_goes_below_zero(relay, upstream):
    upstream.default = Behaviour(content=LONG)
    c = customer(relay, "10", daily_budget_usd="0.008")
    for _ in range(3):
        chat(c)
    spent = Quota(relay.redis).window(key_day_key(c.account_id, c.key_id, time.time()))
    assert spent[0] <= 8_000 and spent[1] == 0
    assert_money_consistent(relay.redis)


requests_strategy = st.lists(
    st.fixed_dictionaries({
        "words": st.integers(1, 400),  # prompt size
        "n": st.sampled_from([None, 1, 2, 5]),
        "limit": st.sampled_from([None, 1, 50, 300, 5_000, 1_000_000]),
        "field": st.sampled_from(["max_tokens", "max_completion_tokens"]),
        "obeys": st.booleans(),
        "stream": st.booleans(),
    }),
    min_size=1, max_size=6,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(funds=st.sampled_from(["0.002", "0.01", "0.05"]), limit=st.sampled_from([None, "0.004", "0.02"]), calls=requests_strategy)
def test_property_no_scope_ever_goes_below_zero(relay, upstream, funds, limit, calls):
    c = customer(relay, funds, credit_limit_usd=limit)
    for call in calls:
        upstream.default = Behaviour(content=LONG[: 6 * 600], follow_limit=call["obeys"])
        extra = {"messages": [{"role": "user", "content": " ".join(["word"] * call["words"])}], "stream": call["stream"]}
        if call["n"]:
            extra["n"] = call["n"]
        if call["limit"]:
            extra[call["field"]] = call["limit"]
        reply = chat(c, **extra)
        assert reply.status_code in (200, 403)
        balance, held = c.live()
        spent, kheld = Quota(relay.redis).key_spent(c.account_id, c.key_id)
        assert balance >= 0 and held == 0 and kheld == 0
        if limit is not None:
            assert spent <= pricing.usd_to_micro(limit)
    assert_money_consistent(relay.redis)


def test_concurrent_requests_never_spend_past_the_balance(relay, upstream):
    """Twelve requests at once on a balance that covers a few: each hold takes what is left."""
    upstream.default = Behaviour(content=LONG, follow_limit=True, chunk_gap=0.0)
    c = customer(relay, "0.02")
    with relay.served() as (host, port):
        def one(_):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Go"}], "stream": True}
            return requests.post(f"http://{host}:{port}/v1/chat/completions", json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {c.key}"}).status_code

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(one, range(12)))
    assert set(statuses) == {200, 403}  # the first few took the money; the rest found too little left
    assert_money_consistent(relay.redis)
    assert c.live() == (c.balance(), 0) and 0 <= c.balance() < 256 * PER_OUTPUT_TOKEN
