"""Gemini-format callers served through OpenAI chat, and natively: generateContent requests as
OpenAI chat (system instruction, roles, function calls and responses matched to ids, inline data
by MIME type, Gemini schemas as JSON Schema, generation config), answers and streams back in
Gemini's shape (thoughts only when asked, function calls whole, usage once at the finish), the
two stream framings, native pass-through, the hold's estimate and Google-format errors."""
from __future__ import annotations

import base64
import json

import orjson
import pytest

from relay.adapters.base import GenerateRequest
from relay.adapters.openai import OpenAIStreamDecoder
from relay.endpoints.generate import (
    GenerateEndpoint,
    gemini_route,
    is_gemini_path,
    parse_generate,
)
from relay.errors import GEMINI, GEMINI_ARRAY, RelayError
from relay.formats.gemini_stream import GeminiNativeStream
from relay.formats.generate_request import (
    gemini_to_chat,
    json_schema,
    prompt_tokens,
    wants_thoughts,
)
from relay.formats.generate_response import (
    Framing,
    GenerateStream,
    completion_to_generate,
    usage_metadata,
)
from relay.pricing import Price, Usage
from relay.settings import RelaySettings

PNG = "iVBORw0KGgo="
SETTINGS = RelaySettings(redis_url="redis://unused", encryption_key="unused")


def test_a_conversation_with_calls_responses_and_media_becomes_openai_chat():
    payload = {
        "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": " Use metric."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Radar for Zürich?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
                                       {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                                       {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                                       {"inlineData": {"mimeType": "text/plain", "data": base64.b64encode("Grüße".encode()).decode()}},
                                       {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/map.webp"}}]},
            {"role": "model", "parts": [{"text": "thinking…", "thought": True},
                                        {"functionCall": {"name": "radar", "args": {"city": "Zürich"}}, "thoughtSignature": "c2ln"},
                                        {"functionCall": {"id": "own-id", "name": "note", "args": {}}},
                                        {"functionCall": {"name": "radar", "args": {"city": "Bern"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "cli-generated", "name": "radar", "response": {"output": "rain"}}},
                                       {"functionResponse": {"id": "own-id", "name": "note", "response": {"saved": True}}},
                                       {"functionResponse": {"name": "radar", "response": {"rain": False}}},
                                       {"text": "Danke"}]},
            {"parts": [{"text": "And tomorrow?"}]},  # no role: the user
        ],
    }
    chat = gemini_to_chat(payload, "gpt-4o", stream=False)
    messages = chat["messages"]
    assert messages[0] == {"role": "system", "content": "Be terse. Use metric."}
    parts = messages[1]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert parts[2] == {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    assert parts[3] == {"type": "file", "file": {"filename": "file.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
    assert parts[4] == {"type": "text", "text": "Grüße"}
    assert parts[5] == {"type": "image_url", "image_url": {"url": "https://example.com/map.webp"}}
    assistant = messages[2]
    assert assistant["content"] is None  # thoughts do not go to another model
    ids = [c["id"] for c in assistant["tool_calls"]]
    assert ids[1] == "own-id" and len(set(ids)) == 3
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Zürich"}
    # Results are matched by id when it is a call's, else to the first unanswered call of that name.
    tools = messages[3:6]
    assert [(m["role"], m["tool_call_id"]) for m in tools] == [("tool", ids[0]), ("tool", "own-id"), ("tool", ids[2])]
    assert [m["content"] for m in tools] == ["rain", '{"saved":true}', '{"rain":false}']
    assert messages[6:] == [{"role": "user", "content": "Danke"}, {"role": "user", "content": "And tomorrow?"}]


def test_tools_schemas_tool_config_and_generation_config():
    payload = {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "tools": [{"functionDeclarations": [
            {"name": "search", "description": "Find", "parameters": {
                "type": "OBJECT", "propertyOrdering": ["q"], "required": ["q"],
                "properties": {"q": {"type": "STRING"}, "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": "3"},
                               "when": {"type": "STRING", "nullable": True, "format": "date-time"}}}},
            {"name": "raw", "parametersJsonSchema": {"type": "object", "properties": {"x": {"type": ["string", "null"]}},
                                                     "additionalProperties": False}},
            {"name": "noargs"}]},
            {"googleSearch": {}}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["search"]}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 300, "candidateCount": 2,
                             "stopSequences": ["a", "b", "c", "d", "e"], "seed": 7, "presencePenalty": 0.5,
                             "responseMimeType": "application/json",
                             "responseSchema": {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}},
                             "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}},
    }
    chat = gemini_to_chat(payload, "gpt-4o", stream=True, max_tokens_field="max_completion_tokens")
    search, raw, noargs = (t["function"] for t in chat["tools"])
    assert search["parameters"] == {"type": "object", "required": ["q"], "properties": {
        "q": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "when": {"type": ["string", "null"], "format": "date-time"}}}
    assert raw["parameters"]["additionalProperties"] is False  # JSON Schema already: as it came
    assert noargs == {"name": "noargs"}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "search"}}
    assert (chat["temperature"], chat["top_p"], chat["max_completion_tokens"], chat["n"], chat["seed"], chat["presence_penalty"]) == (
        0.2, 0.9, 300, 2, 7, 0.5)
    assert chat["stop"] == ["a", "b", "c", "d"]  # OpenAI takes four
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}}}}
    assert chat["stream"] is True
    assert not {"top_k", "topK", "safetySettings", "thinkingConfig", "reasoning_effort"} & set(chat)
    assert wants_thoughts(payload) and not wants_thoughts({"contents": []})


@pytest.mark.parametrize("mode,expected", [("AUTO", "auto"), ("NONE", "none"), ("ANY", "required"), ("VALIDATED", "auto")])
def test_function_calling_modes(mode, expected):
    payload = {"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}]}],
               "toolConfig": {"functionCallingConfig": {"mode": mode}}}
    assert gemini_to_chat(payload, "m", False)["tool_choice"] == expected


@pytest.mark.parametrize("payload,status", [
    ({"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/x"}}]}]}, 501),
    ({"contents": [{"parts": [{"text": "x"}]}], "cachedContent": "cachedContents/abc"}, 501),
    ({"contents": [{"role": "tool", "parts": [{"text": "x"}]}]}, 400),
    ({"contents": [{"role": "model", "parts": [{"text": "only thoughts", "thought": True}]}]}, 400),
])
def test_what_cannot_be_converted_is_refused_before_any_call(payload, status):
    with pytest.raises(RelayError) as refused:
        gemini_to_chat(payload, "m", False)
    assert refused.value.status == status


def test_schema_nesting_is_bounded():
    deep: dict = {"type": "STRING"}
    for _ in range(200):
        deep = {"type": "OBJECT", "properties": {"x": deep}}
    assert json_schema(deep)["type"] == "object"


def test_a_completion_becomes_a_generate_content_response():
    completion = {"id": "chatcmpl-1", "model": "gpt-4o", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Let me look.", "reasoning_content": "Hmm",
                                                                "tool_calls": [{"id": "call_1", "type": "function",
                                                                                "function": {"name": "radar", "arguments": '{"city":"Bern"}'}}]}},
        {"index": 1, "finish_reason": "length", "message": {"role": "assistant", "content": ""}}]}
    usage = Usage(input=80, cache_read=20, output=30, reasoning=5)
    body = completion_to_generate(completion, usage, include_thoughts=True)
    first, second = body["candidates"]
    assert first["content"]["parts"] == [{"text": "Hmm", "thought": True}, {"text": "Let me look."},
                                         {"functionCall": {"id": "call_1", "name": "radar", "args": {"city": "Bern"}}}]
    assert (first["finishReason"], second["finishReason"], second["index"]) == ("STOP", "MAX_TOKENS", 1)
    assert body["usageMetadata"] == {"promptTokenCount": 100, "cachedContentTokenCount": 20, "candidatesTokenCount": 30,
                                     "thoughtsTokenCount": 5, "totalTokenCount": 135}
    hidden = completion_to_generate(completion, usage, include_thoughts=False)
    assert not any(p.get("thought") for p in hidden["candidates"][0]["content"]["parts"])


def openai_stream() -> bytes:
    def chunk(delta, finish=None):
        return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-4o",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""}), chunk({"reasoning_content": "Think"}), chunk({"content": "Grüezi "}),
              chunk({"content": "✓"}),
              chunk({"tool_calls": [{"index": 0, "id": "call_7", "type": "function", "function": {"name": "radar", "arguments": '{"ci'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Bern"}'}}]}), chunk({}, "tool_calls"),
              {"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [],
               "usage": {"prompt_tokens": 50, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 10}}}]
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def feed_in_pieces(decoder, data: bytes, size: int = 7) -> list:
    out = []
    for start in range(0, len(data), size):
        out.extend(decoder.feed(data[start:start + size]))
    out.extend(decoder.finish())
    return out


@pytest.mark.parametrize("sse", [True, False], ids=["sse", "array"])
def test_openai_chunks_become_gemini_events_with_calls_whole_and_usage_at_the_finish(sse):
    stream = GenerateStream(OpenAIStreamDecoder(strip_usage=False), "gpt-4o", 40, Framing(sse), include_thoughts=False)
    events = feed_in_pieces(stream, openai_stream())
    body = b"".join(e.raw or b"" for e in events)
    if sse:
        assert all(frame.startswith(b"data: ") for frame in body.split(b"\r\n\r\n") if frame)
        responses = [json.loads(frame[6:]) for frame in body.split(b"\r\n\r\n") if frame]
    else:
        responses = json.loads(body)
    texts = [p["text"] for r in responses[:-1] for p in r["candidates"][0]["content"]["parts"]]
    assert texts == ["Grüezi ", "✓"]  # the thought was not asked for
    final = responses[-1]
    assert final["candidates"][0] == {"content": {"role": "model", "parts": [
        {"functionCall": {"id": "call_7", "name": "radar", "args": {"city": "Bern"}}}]}, "finishReason": "STOP", "index": 0}
    assert final["usageMetadata"]["promptTokenCount"] == 50 and final["usageMetadata"]["cachedContentTokenCount"] == 10
    assert all(r["responseId"] == "chatcmpl-9" for r in responses)
    assert events[-1].done or any(e.done for e in events)
    assert [e.usage for e in events if e.usage] == [Usage(input=40, cache_read=10, output=12)]


def test_a_converted_stream_cut_before_its_end_never_looks_complete():
    stream = GenerateStream(OpenAIStreamDecoder(strip_usage=False), "gpt-4o", 40, Framing(False), include_thoughts=False)
    cut = openai_stream().split(b"data: [DONE]")[0].split(b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","model":"gpt-4o","choices":[]')[0]
    events = feed_in_pieces(stream, cut)
    assert not any(e.done for e in events)
    assert not b"".join(e.raw or b"" for e in events).endswith(b"]")  # the error event closes the array


def gemini_sse(*responses: dict) -> bytes:
    return b"".join(b"data: " + orjson.dumps(r) + b"\r\n\r\n" for r in responses)


NATIVE = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}], "usageMetadata": {"promptTokenCount": 9}},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo", "thoughtSignature": "c2ln"}]}, "finishReason": "STOP", "index": 0}],
     "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2, "thoughtsTokenCount": 4, "totalTokenCount": 15}},
]


def test_native_events_pass_through_as_they_came_and_usage_counts_at_the_finish():
    events = feed_in_pieces(GeminiNativeStream(Framing(True)), gemini_sse(*NATIVE), size=5)
    assert b"".join(e.raw or b"" for e in events) == gemini_sse(*NATIVE)
    assert [e.usage for e in events if e.usage] == [Usage(input=9, output=2, reasoning=4)]
    assert [e.done for e in events] == [False, True]


def test_native_events_become_one_json_array_without_alt_sse():
    events = feed_in_pieces(GeminiNativeStream(Framing(False)), gemini_sse(*NATIVE))
    assert json.loads(b"".join(e.raw or b"" for e in events)) == NATIVE


def test_a_native_error_event_and_a_cut_stream():
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    events = feed_in_pieces(GeminiNativeStream(Framing(False)), gemini_sse(NATIVE[0], error))
    assert events[-1].error is not None and events[-1].error.kind.value == "overloaded"
    cut = feed_in_pieces(GeminiNativeStream(Framing(False)), gemini_sse(NATIVE[0]))
    assert not any(e.done or e.usage for e in cut) and b"".join(e.raw for e in cut) == b"[" + orjson.dumps(NATIVE[0])


def test_usage_metadata_round_trips_the_normalised_counts():
    from relay.formats.gemini_wire import usage_from_gemini

    usage = Usage(input=70, cache_read=30, output=20, reasoning=9)
    assert usage_from_gemini(usage_metadata(usage)) == usage


def environ(path_model: str, query: str = "") -> dict:
    return {"switchboard.model": path_model, "QUERY_STRING": query}


def test_the_hold_counts_max_output_tokens_times_candidates_and_every_part():
    body = orjson.dumps({"contents": [{"parts": [{"text": "x" * 400}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]}],
                         "generationConfig": {"maxOutputTokens": 100, "candidateCount": 3}})
    request = parse_generate(body, environ("gem-x", "alt=sse"), stream=True)
    assert (request.model, request.sse, request.max_tokens, request.candidates, request.body) == ("gem-x", True, 100, 3, body)
    estimate = GenerateEndpoint(stream=True).estimate(request, Price(model="gem-x", input=1, output=1), SETTINGS)
    assert (estimate.max_output_tokens, estimate.choices, estimate.cappable) == (100, 3, True)  # per candidate, held for each
    assert estimate.local_prompt_tokens == prompt_tokens(request.payload) > 100 + 1_500
    assert estimate.prompt_tokens == 2 * estimate.local_prompt_tokens
    unbounded = parse_generate(orjson.dumps({"contents": [{"parts": [{"text": "x"}]}]}), environ("gem-x"), stream=False)
    assert not unbounded.sse
    assert GenerateEndpoint(stream=False).estimate(unbounded, Price(model="gem-x", input=1, output=1, max_output_tokens=8192),
                                                   SETTINGS).max_output_tokens == 8192


@pytest.mark.parametrize("body", [
    {"contents": []}, {"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, {"contents": [{"parts": []}]},
    {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 9}},
    {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": "lots"}},
    {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": 5},
])
def test_malformed_requests_are_400s(body):
    with pytest.raises(RelayError) as refused:
        parse_generate(orjson.dumps(body), environ("gem-x"), stream=False)
    assert refused.value.status == 400


def test_routes_and_which_paths_are_googles():
    actions = {"generateContent": "G", "streamGenerateContent": "S", "countTokens": "C"}

    def route(path):
        found = gemini_route(path, actions)
        return None if found is None else (found.endpoint, found.model, found.log_path)

    assert route("/v1beta/models/gem-x:streamGenerateContent") == ("S", "gem-x", "/v1beta/models/{model}:streamGenerateContent")
    assert route("/v1/models/a:b:generateContent") == ("G", "a:b", "/v1/models/{model}:generateContent")
    assert route("/v1beta/models/gem-x:embedContent") is None
    assert route("/v1beta/models") == (None, None, "/v1beta/models")
    assert route("/v1beta/models/gem-x") == (None, "gem-x", "/v1beta/models/{model}")
    assert route("/v1beta/files") is None
    assert is_gemini_path("/v1beta/models", {}) and is_gemini_path("/v1/models/x:countTokens", {})
    assert not is_gemini_path("/v1/models", {}) and is_gemini_path("/v1/models", {"HTTP_X_GOOG_API_CLIENT": "google-genai-sdk/3"})


def test_google_format_errors_carry_status_reason_retry_delay_and_request_id():
    error = RelayError(429, "rate_limit_rpm", "Slow down.", retry_after=2.4)
    body = json.loads(error.body("req_1", GEMINI))["error"]
    assert (body["code"], body["status"], body["message"]) == (429, "RESOURCE_EXHAUSTED", "Slow down. (request id: req_1)")
    assert body["details"][0]["reason"] == "RATE_LIMIT_RPM"
    assert body["details"][1] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}
    assert error.sse_event("req_1", GEMINI).startswith(b"data: {") and error.sse_event("req_1", GEMINI).endswith(b"\r\n\r\n")
    assert error.sse_event("req_1", GEMINI_ARRAY).startswith(b",\r\n{") and error.sse_event("req_1", GEMINI_ARRAY).endswith(b"]")


def test_a_generate_request_keeps_the_callers_bytes():
    request = GenerateRequest(model="m", payload={}, body=b'{"contents": []}')
    assert request.body == b'{"contents": []}' and request.sse and request.candidates == 1


def test_a_size_written_in_other_digits_stays_as_written():
    """str.isdigit admits "²", which int() refuses: it was a 500."""
    assert json_schema({"type": "STRING", "maxLength": "²", "minLength": "3"}) == {"type": "string", "maxLength": "²", "minLength": 3}
