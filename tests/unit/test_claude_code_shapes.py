"""What Claude Code 2.1 sends (docs/clients.md), through the pure parts: the Messages → OpenAI chat
conversion (system turns in place, deferred tools, tool references, long user ids), the Gemini
conversion behind it, and the hold's token estimate, which must take any JSON a caller can send."""
from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from relay import tokens
from relay.formats.gemini_request import chat_to_gemini
from relay.formats.messages_request import messages_to_chat

REMINDER = "<system-reminder>\nToday's date is 2026-12-03.\n</system-reminder>"
USER_ID = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "s" * 36})


def claude_code_payload(**extra) -> dict:
    return {
        "model": "claude-sonnet-5", "max_tokens": 64_000, "stream": True,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332;"},
                   {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello", "cache_control": {"type": "ephemeral"}}]},
                     {"role": "system", "content": [{"type": "text", "text": REMINDER}]}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
                  {"name": "DeferredToolPlaceholder", "input_schema": {"type": "object", "properties": {}}, "defer_loading": True}],
        "metadata": {"user_id": USER_ID},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        **extra,
    }


def test_a_system_turn_stays_a_system_message_at_its_position():
    chat = messages_to_chat(claude_code_payload(), "gpt-4o")
    assert chat["messages"] == [
        {"role": "system", "content": "x-anthropic-billing-header: cc_version=2.1.332;\n\nYou are Claude Code."},
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
        {"role": "system", "content": REMINDER},
    ]
    assert not {"thinking", "context_management", "output_config", "metadata"} & chat.keys()


def test_a_string_system_turn_and_an_empty_one():
    payload = claude_code_payload(messages=[{"role": "system", "content": "Be brief."}, {"role": "system", "content": []},
                                            {"role": "user", "content": "Hi"}])
    assert [m["role"] for m in messages_to_chat(payload, "m")["messages"]] == ["system", "system", "user"]


def test_on_gemini_the_system_turn_joins_the_instruction_after_the_top_level_system():
    body = chat_to_gemini(messages_to_chat(claude_code_payload(), "gemini-2.5-flash"))
    assert [p["text"] for p in body["systemInstruction"]["parts"]] == [
        "x-anthropic-billing-header: cc_version=2.1.332;\n\nYou are Claude Code.", REMINDER]
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hello"}]}]


def test_deferred_tools_are_offered_once_a_tool_reference_loads_them():
    assert [t["function"]["name"] for t in messages_to_chat(claude_code_payload(), "m")["tools"]] == ["Bash"]
    history = [
        {"role": "user", "content": "fetch it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ToolSearch", "input": {"query": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "tool_reference", "tool_name": "DeferredToolPlaceholder"}]}]},
    ]
    chat = messages_to_chat(claude_code_payload(messages=history), "m")
    assert [t["function"]["name"] for t in chat["tools"]] == ["Bash", "DeferredToolPlaceholder"]
    assert chat["messages"][-1] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Tool loaded: DeferredToolPlaceholder"}


def test_a_long_user_id_travels_hashed_a_short_one_as_it_is():
    assert messages_to_chat(claude_code_payload(), "m")["user"] == hashlib.sha256(USER_ID.encode()).hexdigest()
    assert messages_to_chat(claude_code_payload(metadata={"user_id": "user-42"}), "m")["user"] == "user-42"
    assert "user" not in messages_to_chat(claude_code_payload(metadata="not an object"), "m")


def test_the_estimate_counts_every_role_and_block_type():
    base = tokens.anthropic_prompt_tokens(claude_code_payload(messages=[{"role": "user", "content": "Say hello"}]))
    with_reminder = tokens.anthropic_prompt_tokens(claude_code_payload())
    assert with_reminder >= base + tokens.text_tokens(REMINDER)
    blocks = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
              {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "result " * 100}]},
              {"type": "search_result", "source": "https://example.com", "title": "t", "content": [{"type": "text", "text": "found"}]},
              {"type": "redacted_thinking", "data": "x" * 400}]
    count = tokens.anthropic_prompt_tokens({"messages": [{"role": "user", "content": blocks}]})
    assert count > tokens.IMAGE_TOKENS + 100 + 100


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
                        ["type", "text", "content", "role", "source", "input", "name", "data", "tool_name", "x"]), inner, max_size=4),
                    max_leaves=30)
TYPES = st.sampled_from(["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "tool_reference", "odd"])
BLOCK = st.fixed_dictionaries({"type": TYPES}, optional={"text": JSON, "content": JSON, "source": JSON, "input": JSON, "data": JSON})


@settings(max_examples=300, deadline=None)
@given(system=JSON | st.lists(BLOCK, max_size=3),
       messages=JSON | st.lists(st.fixed_dictionaries({"role": JSON, "content": JSON | st.lists(BLOCK | JSON, max_size=4)}), max_size=4),
       tools=JSON)
def test_the_estimate_takes_any_json_and_never_raises(system, messages, tools):
    count = tokens.anthropic_prompt_tokens({"system": system, "messages": messages, "tools": tools})
    assert isinstance(count, int) and count >= tokens.PER_REQUEST_OVERHEAD
