"""OpenAI chat ⇄ Anthropic Messages, both ways and back again, on the inputs that break
conversions: several system messages, empty content, tool results with images, unicode, a very
long single token, ids Anthropic would refuse, parallel tool calls."""
from __future__ import annotations

import json

import pytest

from relay.errors import RelayError
from relay.formats.anthropic_request import chat_to_messages
from relay.formats.anthropic_wire import message_to_completion
from relay.formats.common import RAW_ARGUMENTS
from relay.formats.messages_request import messages_to_chat
from relay.formats.messages_response import completion_to_message

PNG = "data:image/png;base64,iVBORw0KGgo="
LONG_TOKEN = "x" * 100_000  # one "word" with no spaces: nothing may split or truncate it


def conversation() -> dict:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in German."}]},
            {"role": "user", "content": [{"type": "text", "text": "Wetter in Zürich? 🌦️ " + LONG_TOKEN},
                                         {"type": "image_url", "image_url": {"url": PNG}}]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Zürich"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "screenshot", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "the radar"},
                                                                  {"type": "image_url", "image_url": {"url": PNG}}]},
            {"role": "user", "content": ""},
            {"role": "user", "content": "Und morgen?"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                  {"type": "function", "function": {"name": "screenshot"}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 300,
        "stop": ["END", "   "],
        "temperature": 1.6,
        "user": "customer-7",
    }


def test_openai_request_becomes_a_valid_anthropic_request():
    body = chat_to_messages(conversation(), "claude-sonnet-4-5", 4096)
    assert body["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in German."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    first, calls, results = (m["content"] for m in body["messages"])
    assert first[0]["text"].endswith(LONG_TOKEN) and "🌦️" in first[0]["text"]
    assert first[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert calls == [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Zürich"}},
                     {"type": "tool_use", "id": "call_2", "name": "screenshot", "input": {}}]  # no empty text block
    # Both results open the next user turn, the image stays inside its result, the empty user message is gone.
    assert results[0] == {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": '{"temp_c": 21}'}]}
    assert results[1]["content"][1]["type"] == "image"
    assert results[2] == {"type": "text", "text": "Und morgen?"}
    assert body["tools"][1] == {"name": "screenshot", "input_schema": {"type": "object", "properties": {}}}
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["stop_sequences"] == ["END"]  # whitespace-only stops are refused by Anthropic
    assert body["temperature"] == 1.0 and body["max_tokens"] == 300 and body["metadata"] == {"user_id": "customer-7"}


def test_the_round_trip_through_anthropic_format_keeps_the_conversation():
    original = conversation()
    back = messages_to_chat(chat_to_messages(original, "claude", 4096), "gpt-4o")
    roles = [m["role"] for m in back["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user"]
    assert back["messages"][0]["content"] == "You are terse.\n\nAnswer in German."
    assert back["messages"][1]["content"][0]["text"] == original["messages"][2]["content"][0]["text"]
    assert back["messages"][2]["tool_calls"] == [
        {"id": "call_1", "type": "function",
         "function": {"name": "weather", "arguments": json.dumps({"city": "Zürich"}, ensure_ascii=False, separators=(",", ":"))}},
        {"id": "call_2", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}]
    assert back["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}
    assert back["messages"][4] == {"role": "tool", "tool_call_id": "call_2", "content": "the radar"}
    # OpenAI tool messages cannot hold images: the tool's image opens the user message that follows.
    assert back["messages"][5]["content"] == [{"type": "image_url", "image_url": {"url": PNG}}, {"type": "text", "text": "Und morgen?"}]
    assert back["tool_choice"] == "required" and back["parallel_tool_calls"] is False
    assert back["stop"] == ["END"] and back["max_tokens"] == 300 and back["user"] == "customer-7"


def test_tool_ids_anthropic_would_refuse_are_mapped_the_same_way_in_calls_and_results():
    payload = {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "functions.get:0", "type": "function",
                                                               "function": {"name": "get", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "functions.get:0", "content": "ok"}]}
    body = chat_to_messages(payload, "claude", 100)
    assert body["messages"][1]["content"][0]["id"] == body["messages"][2]["content"][0]["tool_use_id"] == "functions_get_0"


def test_arguments_that_are_not_a_json_object_are_kept_not_dropped():
    payload = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"cut off'}}]}]}
    tool_use = chat_to_messages(payload, "claude", 100)["messages"][1]["content"][0]
    assert tool_use["input"] == {RAW_ARGUMENTS: '{"cut off'}
    back = messages_to_chat({"messages": [{"role": "assistant", "content": [tool_use]}]}, "m")
    assert back["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"cut off'


@pytest.mark.parametrize("payload,status", [
    ({"n": 2, "messages": [{"role": "user", "content": "x"}]}, 501),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}, 501),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}, 400),
])
def test_what_anthropic_cannot_take_is_refused_clearly(payload, status):
    with pytest.raises(RelayError) as refused:
        chat_to_messages(payload, "claude", 100)
    assert refused.value.status == status


def test_reasoning_effort_becomes_a_thinking_budget_below_max_tokens_without_sampling_changes():
    body = chat_to_messages({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "high", "max_tokens": 5000,
                             "temperature": 0.2}, "claude", 100)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4999}
    assert "temperature" not in body


def test_json_modes_become_an_instruction_since_anthropic_has_no_json_mode():
    body = chat_to_messages({"messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}}, "claude", 100)
    assert body["system"][-1]["text"].endswith('{"type":"object"}')


def anthropic_message(**overrides) -> dict:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "stop_reason": "tool_use",
               "stop_sequence": None, "content": [
                   {"type": "thinking", "thinking": "Let me look.", "signature": "sig"},
                   {"type": "text", "text": "Checking… ✓"},
                   {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Zürich"}},
                   {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}],
               "usage": {"input_tokens": 100, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 25, "output_tokens": 40,
                         "output_tokens_details": {"thinking_tokens": 10}}}
    return dict(message, **overrides)


def test_an_anthropic_answer_becomes_an_openai_completion_with_normalised_usage():
    completion, usage, local = message_to_completion(anthropic_message())
    message = completion["choices"][0]["message"]
    assert message["content"] == "Checking… ✓" and message["reasoning_content"] == "Let me look."
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == [
        ("toolu_1", "weather", {"city": "Zürich"}), ("toolu_2", "time", {})]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert (usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning) == (100, 50, 25, 30, 10)
    assert completion["usage"]["prompt_tokens"] == 175 and completion["usage"]["completion_tokens"] == 40
    assert local > 0


@pytest.mark.parametrize("stop,finish", [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"),
                                         ("tool_use", "tool_calls"), ("refusal", "content_filter")])
def test_stop_reasons_survive_the_round_trip(stop, finish):
    completion, usage, _ = message_to_completion(anthropic_message(stop_reason=stop, content=[{"type": "text", "text": "ok"}]))
    assert completion["choices"][0]["finish_reason"] == finish
    back = completion_to_message(completion, usage)
    assert back["stop_reason"] == ("end_turn" if stop == "stop_sequence" else stop)


def test_an_answer_round_trips_through_openai_format():
    completion, usage, _ = message_to_completion(anthropic_message())
    back = completion_to_message(completion, usage)
    assert [b["type"] for b in back["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert back["content"][2] == {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Zürich"}}
    assert back["usage"] == {"input_tokens": 100, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 25, "output_tokens": 40}
    assert back["id"] == "msg_1" and back["stop_reason"] == "tool_use"


def test_an_empty_answer_stays_well_formed_both_ways():
    completion, usage, _ = message_to_completion(anthropic_message(content=[], stop_reason="end_turn"))
    assert completion["choices"][0]["message"]["content"] == ""
    assert completion_to_message(completion, usage)["content"] == []


def test_temperature_and_top_p_together_keep_only_temperature_for_claude():
    from relay.formats.anthropic_request import chat_to_messages

    both = chat_to_messages({"messages": [{"role": "user", "content": "hi"}], "temperature": 1, "top_p": 0.95}, "claude-x", 100)
    assert both["temperature"] == 1.0 and "top_p" not in both
    alone = chat_to_messages({"messages": [{"role": "user", "content": "hi"}], "top_p": 0.9}, "claude-x", 100)
    assert alone["top_p"] == 0.9
