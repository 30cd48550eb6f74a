"""Stream conversions on real wire bytes fed in awkward pieces (mid-event, mid-UTF-8): Anthropic
events → OpenAI chunks, OpenAI chunks → Anthropic events, the round trip of both, Gemini SSE →
OpenAI chunks, and Anthropic pass-through with its usage."""
from __future__ import annotations

import json

import orjson
import pytest

from relay.adapters.openai import OpenAIStreamDecoder
from relay.formats.anthropic_stream import AnthropicChatStream, AnthropicNativeStream
from relay.formats.gemini_stream import GeminiChatStream
from relay.formats.messages_response import MessagesStream
from relay.sse import SSEBuffer, event_data, event_name

TEXT = "Grüezi ✓ — " + "y" * 5000


def anthropic_events() -> bytes:
    def ev(name, data):
        return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    usage = {"input_tokens": 100, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 25, "output_tokens": 1}
    out = [ev("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                                     "model": "claude", "content": [], "stop_reason": None,
                                                                     "stop_sequence": None, "usage": usage}}),
           ev("ping", {"type": "ping"}),
           ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
           ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
           ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
           ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
           ev("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}})]
    out += [ev("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": TEXT[i:i + 7]}})
            for i in range(0, len(TEXT), 7)]
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 1}))
    for index, (tool_id, name, args) in enumerate([("toolu_a", "weather", '{"city": "Zürich"}'), ("toolu_b", "time", "{}")], start=2):
        out.append(ev("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}}))
        out += [ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}})
                for p in ("", args[:5], args[5:])]
        out.append(ev("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                    "usage": {"output_tokens": 60, "output_tokens_details": {"thinking_tokens": 5}}}))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return "".join(out).encode()


def feed(decoder, data: bytes, piece: int = 13):
    events = []
    for i in range(0, len(data), piece):
        events.extend(decoder.feed(data[i:i + piece]))
    events.extend(decoder.finish())
    return events


def openai_chunks(events) -> list[dict]:
    """The chunks a caller receives, parsed back from the bytes sent."""
    buffer, chunks = SSEBuffer(), []
    for raw in (e.raw for e in events if e.raw):
        for event in buffer.feed(raw):
            data = event_data(event)
            chunks.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return chunks


def accumulate_openai(chunks) -> dict:
    text, reasoning, calls, finish, usage = "", "", {}, None, None
    for chunk in chunks:
        if chunk == "[DONE]":
            continue
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": call.get("id"), "name": "", "arguments": ""})
                entry["name"] += call.get("function", {}).get("name") or ""
                entry["arguments"] += call.get("function", {}).get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return {"text": text, "reasoning": reasoning, "calls": [calls[i] for i in sorted(calls)], "finish": finish, "usage": usage}


def anthropic_message(events) -> dict:
    """Anthropic events (from StreamEvent bytes) accumulated the way the SDK does, checking order."""
    buffer, message, open_block = SSEBuffer(), None, None
    for raw in (e.raw for e in events if e.raw):
        for event in buffer.feed(raw):
            name, data = event_name(event).decode(), orjson.loads(event_data(event))
            assert name == data["type"]
            if name == "message_start":
                assert message is None
                message = data["message"]
            elif name == "content_block_start":
                assert open_block is None and data["index"] == len(message["content"])
                open_block = data["index"]
                message["content"].append(dict(data["content_block"], _json=""))
            elif name == "content_block_delta":
                assert data["index"] == open_block
                block, delta = message["content"][data["index"]], data["delta"]
                block["text" if delta["type"] == "text_delta" else "thinking" if delta["type"] == "thinking_delta" else "_json"] += (
                    delta.get("text") or delta.get("thinking") or delta.get("partial_json") or "")
            elif name == "content_block_stop":
                assert data["index"] == open_block
                open_block = None
            elif name == "message_delta":
                assert open_block is None
                message["stop_reason"] = data["delta"]["stop_reason"]
                message["usage"].update(data["usage"])
            elif name == "message_stop":
                message["stopped"] = True
    for block in message["content"]:
        raw = block.pop("_json")
        if block["type"] == "tool_use":
            block["input"] = json.loads(raw or "{}")
    return message


@pytest.mark.parametrize("piece", [1, 13, 4096])
def test_anthropic_events_become_openai_chunks(piece):
    events = feed(AnthropicChatStream(wants_usage=True), anthropic_events(), piece)
    chunks = openai_chunks(events)
    assert chunks[-1] == "[DONE]" and chunks[-2]["choices"] == []
    result = accumulate_openai(chunks)
    assert (result["text"], result["reasoning"], result["finish"]) == (TEXT, "Hmm.", "tool_calls")
    assert result["calls"] == [{"id": "toolu_a", "name": "weather", "arguments": '{"city": "Zürich"}'},
                               {"id": "toolu_b", "name": "time", "arguments": "{}"}]
    assert result["usage"]["prompt_tokens"] == 175 and result["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    final = [e.usage for e in events if e.usage][-1]
    assert (final.input, final.cache_read, final.cache_write, final.output, final.reasoning) == (100, 50, 25, 55, 5)
    assert events[-1].done


def test_without_include_usage_no_usage_chunk_is_sent_but_usage_is_still_read():
    events = feed(AnthropicChatStream(wants_usage=False), anthropic_events())
    assert all(c == "[DONE]" or c.get("usage") is None for c in openai_chunks(events))
    assert [e.usage for e in events if e.usage][-1].output == 55


def test_the_stream_round_trips_anthropic_to_openai_to_anthropic():
    openai_bytes = b"".join(e.raw for e in feed(AnthropicChatStream(wants_usage=True), anthropic_events()) if e.raw)
    back = anthropic_message(feed(MessagesStream(OpenAIStreamDecoder(strip_usage=False), "claude", 9), openai_bytes, 7))
    assert [b["type"] for b in back["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert back["content"][1]["text"] == TEXT
    assert back["content"][2] == {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Zürich"}}
    assert back["stop_reason"] == "tool_use" and back["stopped"]
    assert back["usage"] == {"input_tokens": 100, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 25, "output_tokens": 60}


def openai_stream(include_usage: bool = True) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}

    def chunk(delta, finish=None):
        return b"data: " + orjson.dumps(dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])) + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi ✓"}),
           chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
           chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
           chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
           chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}),
           chunk({}, "tool_calls")]
    if include_usage:
        out.append(b"data: " + orjson.dumps(dict(base, choices=[], usage={"prompt_tokens": 30, "completion_tokens": 8,
                                                                         "prompt_tokens_details": {"cached_tokens": 10}})) + b"\n\n")
    return b"".join(out) + b"data: [DONE]\n\n"


def test_openai_chunks_become_a_well_formed_anthropic_event_sequence():
    events = feed(MessagesStream(OpenAIStreamDecoder(strip_usage=False), "gpt-4o", 25), openai_stream(), 5)
    message = anthropic_message(events)
    assert message["usage"]["input_tokens"] == 20 and message["usage"]["cache_read_input_tokens"] == 10
    assert message["usage"]["output_tokens"] == 8
    assert [b["type"] for b in message["content"]] == ["text", "tool_use", "tool_use"]
    assert message["content"][1]["input"] == {"a": 1} and message["content"][2]["input"] == {}
    assert message["stop_reason"] == "tool_use" and message["stopped"]


def test_an_openai_stream_cut_before_done_never_reports_anthropic_completion():
    cut = openai_stream().split(b"data: [DONE]")[0][:-40]
    events = feed(MessagesStream(OpenAIStreamDecoder(strip_usage=False), "gpt-4o", 25), cut)
    assert not any(e.done for e in events)
    assert not any(e.raw and b"message_stop" in e.raw for e in events)


def gemini_stream(finish: bool = True) -> bytes:
    def chunk(parts, final=False):
        body = {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}], "modelVersion": "gemini-2.5-flash",
                "responseId": "r1", "usageMetadata": {"promptTokenCount": 40}}
        if final:
            body["candidates"][0]["finishReason"] = "STOP"
            body["usageMetadata"] = {"promptTokenCount": 40, "cachedContentTokenCount": 10, "candidatesTokenCount": 7, "thoughtsTokenCount": 3}
        return b"data: " + orjson.dumps(body) + b"\r\n\r\n"

    out = [chunk([{"text": "Pondering", "thought": True}]), chunk([{"text": "Grüße"}])]
    if finish:
        out.append(chunk([{"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "SIG=="}], final=True))
    return b"".join(out)


def test_gemini_sse_becomes_openai_chunks_with_usage_only_at_the_finish():
    events = feed(GeminiChatStream("gemini-2.5-flash", wants_usage=True), gemini_stream(), 11)
    result = accumulate_openai(openai_chunks(events))
    assert (result["text"], result["reasoning"], result["finish"]) == ("Grüße", "Pondering", "tool_calls")
    assert result["calls"][0]["name"] == "f" and json.loads(result["calls"][0]["arguments"]) == {"x": 1}
    assert result["calls"][0]["id"].endswith("__ts__SIG==")  # the thought signature rides in the id
    assert [e.usage for e in events if e.usage] == [events[-1].usage] and events[-1].done
    usage = events[-1].usage
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (30, 10, 7, 3)
    assert openai_chunks(events)[-1] == "[DONE]"


def test_a_gemini_stream_that_stops_before_its_finish_is_not_complete():
    events = feed(GeminiChatStream("gemini-2.5-flash", wants_usage=False), gemini_stream(finish=False))
    assert not any(e.done or e.usage for e in events)
    assert b"[DONE]" not in b"".join(e.raw for e in events if e.raw)


def test_gemini_errors_and_blocked_prompts_in_a_stream():
    error = b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\r\n\r\n'
    (event,) = feed(GeminiChatStream("g", wants_usage=False), error)
    assert event.error is not None and event.error.kind.value == "overloaded"
    blocked = b'data: {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8}}\r\n\r\n'
    (event,) = feed(GeminiChatStream("g", wants_usage=False), blocked)
    assert event.done and event.chunk["choices"][0]["finish_reason"] == "content_filter" and event.usage.input == 8


def test_anthropic_pass_through_keeps_the_bytes_and_reads_usage_and_the_end():
    data = anthropic_events()
    events = feed(AnthropicNativeStream(), data, 17)
    assert b"".join(e.raw for e in events if e.raw) == data
    usage = [e.usage for e in events if e.usage][-1]
    assert (usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning) == (100, 50, 25, 55, 5)
    assert events[-1].done and sum(e.output_tokens for e in events) > 1000


def test_an_anthropic_error_event_is_classified():
    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    (event,) = feed(AnthropicNativeStream(), error)
    assert event.error.kind.value == "overloaded" and event.raw is None


@pytest.mark.parametrize("decoder", [AnthropicNativeStream, lambda: AnthropicChatStream(wants_usage=False)], ids=["native", "to-openai"])
def test_an_overload_right_after_message_start_arrives_before_anything_was_sent(decoder):
    start, ping = anthropic_events().split(b"\n\n")[:2]
    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    events = feed(decoder(), start + b"\n\n" + ping + b"\n\n" + error, 9)
    assert [e.raw for e in events if e.raw] == []  # still retryable, and nothing to bill
    assert events[-1].error.kind.value == "overloaded"


def test_held_back_events_go_out_with_the_first_content():
    data = anthropic_events()
    events = feed(AnthropicNativeStream(), data, 5000)
    assert events[0].raw is None and events[2].raw.startswith(b"event: message_start")
