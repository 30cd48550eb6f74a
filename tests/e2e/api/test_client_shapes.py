"""Requests shaped the way real coding agents send them (captured from Claude Code 2.1, see
docs/clients.md), served on every channel type: system turns inside `messages`, `?beta=true`,
deferred and server tools, adaptive thinking, context management, a JSON `user_id`, Claude Code's
headers; and `count_tokens` with the same body. The real programs run in tests/e2e/clients."""
from __future__ import annotations

import json

import pytest
import requests

from tests.e2e.api.conformance import CHANNELS, PUBLIC_MODEL, TEXT
from tests.e2e.api.conftest import customer

pytestmark = pytest.mark.e2e

REMINDER = "<system-reminder>\nToday's date is 2026-12-03.\n</system-reminder>"
USER_ID = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "2f9c0b7e-6a53-4c1e-9a8e-3f1c2b4d5e6f"})
BODY = {
    "max_tokens": 64_000,
    "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332;"},
               {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Say hello", "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": [{"type": "text", "text": REMINDER}]},
    ],
    "tools": [
        {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
        {"name": "DeferredToolPlaceholder", "description": "never call", "input_schema": {"type": "object", "properties": {}},
         "defer_loading": True},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "metadata": {"user_id": USER_ID},
    "thinking": {"type": "adaptive", "display": "omitted"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
}
HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
    "anthropic-dangerous-direct-browser-access": "true",
    "x-app": "cli",
    "X-Stainless-Lang": "js",
    "X-Stainless-Retry-Count": "0",
    "X-Claude-Code-Session-Id": "2f9c0b7e-6a53-4c1e-9a8e-3f1c2b4d5e6f",
    "User-Agent": "claude-cli/2.1.332 (external, sdk-cli)",
}


@pytest.fixture(scope="module")
def key(gateway, channels) -> str:
    return customer(gateway, "client-shapes@example.com", "20")


def post(gateway, key: str, path: str, body: dict) -> requests.Response:
    return requests.post(gateway.url + path, json=body, headers={**HEADERS, "x-api-key": key}, timeout=30)


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_claude_code_request_is_served_on_every_channel(gateway, fakes, key, channel, stream):
    response = post(gateway, key, "/v1/messages?beta=true", dict(BODY, model=PUBLIC_MODEL[channel], stream=stream))
    assert response.status_code == 200, response.text
    if stream:
        assert TEXT.split()[-1] in response.text and "message_stop" in response.text
    else:
        assert response.json()["content"][-1]["text"] == TEXT
    if channel == "anthropic":  # native: the body as received, the caller's betas along
        [sent] = fakes.anthropic.message_requests()
        assert sent["body"] == dict(BODY, model="claude-sonnet-4-5", stream=stream)
        assert sent["headers"]["anthropic-beta"] == HEADERS["anthropic-beta"]
    elif channel == "gemini":  # the system turn folds into the instruction, after the top-level system
        body = fakes.gemini.generate_requests()[-1]["body"]
        assert [p["text"] for p in body["systemInstruction"]["parts"]][-1] == REMINDER
        assert [c["role"] for c in body["contents"]] == ["user"]
        assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == ["Bash"]
    else:  # OpenAI chat: a system message where the turn was; only the loaded custom tools
        body = fakes.of(channel).chat_requests()[-1]["body"]
        assert [(m["role"], m["content"] if m["role"] == "system" else None) for m in body["messages"]] == [
            ("system", "x-anthropic-billing-header: cc_version=2.1.332;\n\nYou are Claude Code."), ("user", None), ("system", REMINDER)]
        assert [t["function"]["name"] for t in body["tools"]] == ["Bash"]
        assert len(body["user"]) == 64 and body["user"] != USER_ID


def test_a_deferred_tool_loaded_by_tool_search_is_offered_when_converted(gateway, fakes, key):
    history = [
        {"role": "user", "content": "Find a tool to fetch a URL"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ToolSearch", "input": {"query": "select:WebFetch"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "tool_reference", "tool_name": "WebFetch"}]}]},
    ]
    tools = [{"name": "ToolSearch", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}},
             {"name": "WebFetch", "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}}, "defer_loading": True},
             {"name": "NotebookEdit", "input_schema": {"type": "object", "properties": {}}, "defer_loading": True}]
    response = post(gateway, key, "/v1/messages", {"model": PUBLIC_MODEL["openai"], "max_tokens": 100, "messages": history, "tools": tools})
    assert response.status_code == 200, response.text
    body = fakes.openai.chat_requests()[-1]["body"]
    assert [t["function"]["name"] for t in body["tools"]] == ["ToolSearch", "WebFetch"]
    assert body["messages"][-1] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Tool loaded: WebFetch"}


@pytest.mark.parametrize("channel", ["anthropic", "gemini"])
def test_count_tokens_takes_the_same_body(gateway, fakes, key, channel):
    body = {k: v for k, v in BODY.items() if k != "max_tokens"}
    response = post(gateway, key, "/v1/messages/count_tokens?beta=true", dict(body, model=PUBLIC_MODEL[channel]))
    assert response.status_code == 200, response.text
    assert response.json()["input_tokens"] > 10
    if channel == "anthropic":
        assert fakes.anthropic.requests[-1]["body"]["messages"] == BODY["messages"]


@pytest.mark.parametrize("path", ["/v1/chat/completions?beta=true", "/v1/responses?beta=true", "/v1/models?beta=true"])
def test_query_strings_do_not_change_the_route(gateway, key, path):
    body = ({"model": PUBLIC_MODEL["openai"], "messages": [{"role": "user", "content": "Hi"}]} if "chat" in path
            else {"model": "gpt-4o", "input": "Hi"})
    response = (requests.get(gateway.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30) if "models" in path
                else requests.post(gateway.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30))
    assert response.status_code == 200, response.text
