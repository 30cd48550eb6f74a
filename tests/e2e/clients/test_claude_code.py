"""Claude Code (the real program, pinned) through `switchboard up`: natively to an Anthropic channel
and by conversion to an OpenAI channel (a tool round trip), answer and exact charge each time. The
Gemini conversion of the same request shape is in tests/e2e/api/test_client_shapes.py.

Claude Code 2.x sends what the Anthropic SDK examples never do: `POST /v1/messages?beta=true`, a
`role: "system"` turn inside `messages` (its reminders, after the user's turn), deferred tools,
adaptive thinking, `context_management`, `output_config`, a 64k `max_tokens`, a JSON `user_id`."""
from __future__ import annotations

import json

import pytest

from tests.e2e.clients.conftest import OUTPUT_CAP, USD, charge, run
from tests.e2e.clients.programs import CLAUDE_CODE, install
from tests.fakes.anthropic_server import AnthropicReply
from tests.fakes.openai_server import Behaviour

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # the first run installs the program

ANSWER = "Hello from the fake upstream."


@pytest.fixture(scope="module")
def claude():
    return install(CLAUDE_CODE)


def ask(claude, gateway, key: str, model: str, cwd, prompt: str = "Say hello", *options: str) -> str:
    env = {
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_API_KEY": key,
        # Background calls (title, quota check) would go to the "small fast" model: keep it the same.
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        # No update checks, telemetry, error reports or feedback surveys: nothing leaves but the API calls.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    return run(claude, ["-p", prompt, "--model", model, *options], env, cwd)


def test_native_anthropic_channel_forwards_what_claude_code_sends(claude, gateway, fakes, tmp_path, customer):
    email, key = customer("cc-native")
    fakes.anthropic.push(AnthropicReply(text=ANSWER, input_tokens=1_200, cache_read=24_000, cache_write=300, output_tokens=7))
    assert ANSWER in ask(claude, gateway, key, "sb-anthropic", tmp_path)
    [sent] = fakes.anthropic.message_requests()
    body = sent["body"]
    assert body["model"] == "claude-sonnet-5"
    # the system turn that broke every request arrives as Claude Code sent it
    assert [m["role"] for m in body["messages"]] == ["user", "system"]
    assert "You have been invoked in the following environment" in body["messages"][1]["content"][0]["text"]
    assert {"thinking", "context_management", "metadata", "tools", "system"} <= body.keys()
    assert any(t.get("defer_loading") for t in body["tools"])
    assert "claude-code-20250219" in sent["headers"]["anthropic-beta"]
    # 1,200 input × $3 + 24,000 cache reads × $0.30 + 300 cache writes × $3.75 + 7 output × $15, per 1M
    assert charge(1_200, 7, 24_000, 300) == 12_030
    gateway.wait_for_balance(email, USD * 1_000_000 - 12_030)


def test_openai_channel_by_conversion_with_a_tool_round_trip(claude, gateway, fakes, tmp_path, customer):
    email, key = customer("cc-openai")
    note = tmp_path / "note.txt"
    note.write_text("The secret flower is a sunflower.\n")
    call = {"name": "Read", "arguments": json.dumps({"file_path": str(note)})}
    fakes.openai.push(Behaviour(content="", tool_calls=[call], prompt_tokens=25_000, cached_tokens=20_000, completion_tokens=20),
                      Behaviour(content="The note names a sunflower.", prompt_tokens=25_100, cached_tokens=25_000, completion_tokens=6))
    out = ask(claude, gateway, key, "sb-openai", tmp_path, "What flower does note.txt name?", "--allowedTools", "Read")
    assert "The note names a sunflower." in out
    first, second = fakes.openai.chat_requests()
    body = first["body"]
    assert body["model"] == "gpt-4o" and body["stream"] is True
    # the top-level system first, Claude Code's reminder turn where it was: after the user's turn
    assert [m["role"] for m in body["messages"]] == ["system", "user", "system"]
    assert "You have been invoked in the following environment" in body["messages"][2]["content"]
    assert body["max_tokens"] == OUTPUT_CAP  # Claude Code asked for 64k
    names = {t["function"]["name"] for t in body["tools"]}
    assert "Read" in names and "DeferredToolPlaceholder" not in names  # deferred tools stay unloaded
    assert len(body["user"]) <= 64  # Claude Code's user_id is a JSON document; OpenAI takes an id
    assert not {"thinking", "context_management", "output_config", "metadata"} & body.keys()
    # the second turn carries the call and Claude Code's tool result, in OpenAI's shape
    assistant = next(m for m in second["body"]["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["function"]["name"] == "Read"
    result = next(m for m in second["body"]["messages"] if m["role"] == "tool")
    assert result["tool_call_id"] == assistant["tool_calls"][0]["id"] and "sunflower" in result["content"]
    # per 1M: 5,000 uncached input × $3 + 20,000 cached × $0.30 + 20 output × $15, then 100 × $3 + 25,000 × $0.30 + 6 × $15
    assert (charge(5_000, 20, 20_000), charge(100, 6, 25_000)) == (21_300, 7_890)
    gateway.wait_for_balance(email, USD * 1_000_000 - 21_300 - 7_890)
