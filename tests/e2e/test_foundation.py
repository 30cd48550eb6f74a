"""End to end through `switchboard up`: the official openai SDK against the relay, a fake OpenAI
upstream behind it, exact micro-dollar charges in the settled balance."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import openai
import pytest
import requests

from tests.fakes.openai_server import Behaviour

pytestmark = pytest.mark.e2e

EMAIL = "ana@example.com"


@dataclass
class World:
    key: str
    narrow_key: str


@pytest.fixture(scope="module")
def world(gateway, fake_openai):
    gateway.cli("channel", "add", "--name", "fake-openai", "--type", "openai", "--base-url", fake_openai.url,
                "--keys", "sk-upstream-1", "--models", "gpt-4o-mini,gpt-4o,flat-model,unpriced-model")
    gateway.cli("price", "set", "gpt-4o-mini", "--input", "3", "--output", "15", "--cache-read", "0.3", "--now")
    gateway.cli("price", "set", "gpt-4o", "--input", "2.5", "--output", "10", "--now")
    gateway.cli("price", "set", "flat-model", "--input", "0", "--output", "0", "--per-request", "0.01", "--now")
    gateway.cli("user", "create", "--email", EMAIL)
    gateway.cli("topup", "--user", EMAIL, "--usd", "5", "--reason", "e2e funds")
    key = gateway.cli("key", "create", "--user", EMAIL, "--name", "main")["key"]
    narrow = gateway.cli("key", "create", "--user", EMAIL, "--name", "narrow", "--models", "gpt-4o")["key"]
    return World(key=key, narrow_key=narrow)


def sdk(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=30)


@pytest.fixture(autouse=True)
def fresh_fake(fake_openai):
    fake_openai.reset_log()


def customer(gateway, name: str, usd: str = "5") -> tuple[str, str]:
    """A fresh funded user and key, so each test reads its own charges and nobody else's."""
    email = f"{name}@example.com"
    gateway.cli("user", "create", "--email", email)
    gateway.cli("topup", "--user", email, "--usd", usd, "--reason", "e2e funds")
    return email, gateway.cli("key", "create", "--user", email)["key"]


SMALL_CHAT = (12 * 3_000_000 + 5 * 15_000_000 + 500_000) // 1_000_000  # the fake's default usage, rounded half up


def test_chat_is_answered_and_charged_exactly(gateway, world, fake_openai):
    email, key = customer(gateway, "chat")
    fake_openai.push(Behaviour(prompt_tokens=1000, cached_tokens=200, completion_tokens=50, reasoning_tokens=20))
    reply = sdk(gateway, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    completion = reply.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert reply.headers["x-request-id"].startswith("req_")
    # 800 input × $3 + 200 cached × $0.30 + (30 output + 20 reasoning) × $15, per 1M tokens
    expected = (800 * 3_000_000 + 200 * 300_000 + 50 * 15_000_000) // 1_000_000
    assert expected == 3_210
    gateway.wait_for_balance(email, 5_000_000 - expected)
    assert fake_openai.chat_requests()[0]["headers"]["Authorization"] == "Bearer sk-upstream-1"


def test_stream_without_include_usage_is_billed_but_hides_usage(gateway, world, fake_openai):
    email, key = customer(gateway, "streamer")
    stream = sdk(gateway, key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert all(c.usage is None for c in chunks)
    sent = fake_openai.chat_requests()[0]["body"]
    assert sent["stream_options"] == {"include_usage": True}  # the relay asked for usage anyway
    gateway.wait_for_balance(email, 5_000_000 - SMALL_CHAT)


def test_raw_stream_without_include_usage_carries_no_usage_bytes(gateway, world):
    response = requests.post(gateway.base_url + "/chat/completions", stream=True, timeout=30,
                             headers={"Authorization": f"Bearer {world.key}"},
                             json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    body = response.content
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"usage" not in body
    assert body.rstrip().endswith(b"data: [DONE]")


def test_stream_with_include_usage_gets_the_usage_chunk(gateway, world):
    stream = sdk(gateway, world.key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 12
    assert chunks[-1].choices == []


def test_models_lists_only_what_the_key_may_use(gateway, world):
    wide = sorted(m.id for m in sdk(gateway, world.key).models.list())
    assert wide == ["flat-model", "gpt-4o", "gpt-4o-mini"]  # unpriced-model is served but not routable
    narrow = [m.id for m in sdk(gateway, world.narrow_key).models.list()]
    assert narrow == ["gpt-4o"]


def test_errors_arrive_as_the_sdks_own_exception_classes(gateway, world):
    with pytest.raises(openai.AuthenticationError) as e401:
        sdk(gateway, "sk-sb-wrong").chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e401.value.status_code == 401 and e401.value.code == "invalid_api_key"
    assert "request id: req_" in e401.value.message
    with pytest.raises(openai.PermissionDeniedError) as e403:
        sdk(gateway, world.narrow_key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e403.value.code == "model_not_allowed"
    with pytest.raises(openai.NotFoundError) as e404:
        sdk(gateway, world.key).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e404.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e400:
        sdk(gateway, world.key).chat.completions.create(model="gpt-4o-mini", messages=[])
    assert e400.value.param == "messages"
    with pytest.raises(openai.APIStatusError) as e413:
        sdk(gateway, world.key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 300_000}])
    assert e413.value.status_code == 413


def test_unparseable_body_is_a_400_with_openai_error_json(gateway, world):
    response = requests.post(gateway.base_url + "/chat/completions", data=b"{nope", timeout=10,
                             headers={"Authorization": f"Bearer {world.key}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert response.headers["x-request-id"].startswith("req_")


def test_upstream_failure_is_a_5xx_and_charges_nothing(gateway, world, fake_openai):
    email, key = customer(gateway, "unlucky")
    fake_openai.push(Behaviour(status=500))
    with pytest.raises(openai.InternalServerError) as failure:
        sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert failure.value.status_code == 502
    assert "sk-upstream" not in failure.value.message and "127.0.0.1" not in failure.value.message
    # A successful request after it: the settled balance moves by exactly its cost and no more.
    sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    gateway.wait_for_balance(email, 5_000_000 - SMALL_CHAT)


def test_an_empty_balance_is_refused_with_403(gateway, world):
    gateway.cli("user", "create", "--email", "broke@example.com")
    key = gateway.cli("key", "create", "--user", "broke@example.com")["key"]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert refused.value.code == "insufficient_quota"


def test_fifty_concurrent_requests_against_a_balance_for_exactly_seven(gateway, world, fake_openai):
    gateway.cli("user", "create", "--email", "seven@example.com")
    gateway.cli("topup", "--user", "seven@example.com", "--usd", "0.07", "--reason", "exactly seven flat requests")
    key = gateway.cli("key", "create", "--user", "seven@example.com")["key"]
    client = sdk(gateway, key)
    outcomes: list[str] = []
    barrier = threading.Barrier(50)

    def call():
        barrier.wait()
        try:
            client.chat.completions.create(model="flat-model", messages=[{"role": "user", "content": "x"}], max_tokens=10)
            outcomes.append("ok")
        except openai.PermissionDeniedError as error:
            outcomes.append(error.code)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 7
    assert outcomes.count("insufficient_quota") == 43
    assert len([r for r in fake_openai.chat_requests() if r["body"]["model"] == "flat-model"]) == 7
    assert gateway.wait_for_balance("seven@example.com", 0) == {"balance_micro_usd": 0, "held_micro_usd": 0}
