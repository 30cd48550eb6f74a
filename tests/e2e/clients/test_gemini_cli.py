"""Gemini CLI (the real program, pinned) through `switchboard up`'s Gemini-native endpoints
(`/v1beta/models/{model}:streamGenerateContent?alt=sse`, `x-goog-api-key`): natively to a Gemini
channel and by conversion to an OpenAI channel, answer and exact charge."""
from __future__ import annotations

import json

import pytest

from tests.e2e.clients.conftest import USD, charge, run
from tests.e2e.clients.programs import GEMINI_CLI, install
from tests.fakes.gemini_server import GeminiReply
from tests.fakes.openai_server import Behaviour

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # the first run installs the program

ANSWER = "Hello from the fake upstream."
# ~/.gemini/settings.json: API-key auth chosen up front (no sign-in dialog), no usage statistics,
# telemetry or update checks.
SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


@pytest.fixture(scope="module")
def gemini():
    return install(GEMINI_CLI)


def ask(gemini, gateway, key: str, model: str, cwd) -> str:
    (cwd / ".gemini").mkdir(exist_ok=True)
    (cwd / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS))
    env = {
        "GEMINI_API_KEY": key,
        "GOOGLE_GEMINI_BASE_URL": gateway.url,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",  # headless runs refuse untrusted folders otherwise
    }
    # An explicit model: "auto" would first ask a flash-lite classifier which model to use.
    return run(gemini, ["-m", model, "-p", "Say hello"], env, cwd)


def test_gemini_cli_through_a_native_gemini_channel(gemini, gateway, fakes, tmp_path, customer):
    email, key = customer("gemini-native")
    fakes.gemini.push(GeminiReply(text=ANSWER, prompt_tokens=8_000, cached_tokens=6_000, candidates_tokens=5))
    assert ANSWER in ask(gemini, gateway, key, "sb-gemini", tmp_path)
    [sent] = fakes.gemini.generate_requests()
    assert sent["path"].startswith("/v1beta/models/gemini-2.5-flash:streamGenerateContent")
    assert sent["headers"]["x-goog-api-key"] == "sk-gemini-upstream"
    body = sent["body"]
    assert body["contents"][-1]["parts"][-1]["text"] == "Say hello"
    assert "parametersJsonSchema" in body["tools"][0]["functionDeclarations"][0]  # Gemini CLI's schema field, untouched
    # 2,000 uncached input × $3 + 6,000 cached × $0.30 + 5 output × $15, per 1M
    assert charge(2_000, 5, 6_000) == 7_875
    gateway.wait_for_balance(email, USD * 1_000_000 - 7_875)


def test_gemini_cli_through_an_openai_channel(gemini, gateway, fakes, tmp_path, customer):
    email, key = customer("gemini-openai")
    fakes.openai.push(Behaviour(content=ANSWER, prompt_tokens=8_000, completion_tokens=5))
    assert ANSWER in ask(gemini, gateway, key, "sb-openai", tmp_path)
    [sent] = fakes.openai.chat_requests()
    body = sent["body"]
    assert body["model"] == "gpt-4o"
    assert body["messages"][0]["role"] == "system" and body["messages"][-1]["role"] == "user"
    assert all(t["function"]["parameters"].get("type") for t in body["tools"])  # parametersJsonSchema became parameters
    assert charge(8_000, 5) == 24_075
    gateway.wait_for_balance(email, USD * 1_000_000 - 24_075)
