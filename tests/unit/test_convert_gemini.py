"""OpenAI chat ⇄ Gemini generateContent on tricky inputs: system messages anywhere, empty content,
tool results (JSON, text, with images) named after their calls, thought signatures carried in tool
call ids, JSON Schema Gemini refuses, and answers with thoughts, calls, safety blocks and usage."""
from __future__ import annotations

import json

import pytest

from relay.errors import RelayError
from relay.formats.gemini_request import chat_to_gemini
from relay.formats.gemini_wire import response_to_completion
from relay.formats.schema import clean_schema

PNG = "data:image/png;base64,iVBORw0KGgo="


def test_roles_system_instruction_images_and_tool_results():
    body = chat_to_gemini({"messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Radar für Zürich? 🌧"}, {"type": "image_url", "image_url": {"url": PNG}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/map.webp?x=1"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a__ts__SIG1", "type": "function", "function": {"name": "radar", "arguments": '{"city":"Zürich"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "note", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_a__ts__SIG1", "content": [{"type": "text", "text": '{"rain": true}'},
                                                                        {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "tool", "tool_call_id": "call_b", "content": "noted"},
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": ""},
        {"role": "user", "content": "Danke"},
    ]})
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}, {"text": "Use metric units."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    user, model, results = (c["parts"] for c in body["contents"])
    assert user[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert user[2] == {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/map.webp?x=1"}}
    assert model == [{"functionCall": {"name": "radar", "args": {"city": "Zürich"}}, "thoughtSignature": "SIG1"},
                     {"functionCall": {"name": "note", "args": {}}}]
    assert results[0] == {"functionResponse": {"name": "radar", "response": {"rain": True}}}
    assert results[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert results[2] == {"functionResponse": {"name": "note", "response": {"content": "noted"}}}
    assert results[3] == {"text": "Danke"}  # the empty user message left no empty part behind


def test_generation_settings_tools_and_tool_choice():
    body = chat_to_gemini({"messages": [{"role": "user", "content": "x"}], "temperature": 0.3, "top_p": 0.9, "max_tokens": 200,
                           "stop": "END", "n": 2, "seed": 7, "reasoning_effort": "low", "tool_choice": {"type": "function", "function": {"name": "f"}},
                           "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "integer"}},
                                                                                                 "additionalProperties": False}}},
                           "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]})
    assert body["generationConfig"] == {"temperature": 0.3, "topP": 0.9, "seed": 7, "maxOutputTokens": 200, "stopSequences": ["END"],
                                        "candidateCount": 2, "responseMimeType": "application/json",
                                        "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                                        "thinkingConfig": {"thinkingBudget": 1024}}
    assert body["tools"] == [{"functionDeclarations": [{"name": "f"}]}]  # an empty object schema is left out
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}


def test_json_schema_is_cut_down_to_what_gemini_accepts():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
        "$defs": {"Unit": {"type": "string", "enum": ["c", "f"]}},
        "properties": {
            "city": {"type": ["string", "null"], "format": "uri", "description": "A city"},
            "unit": {"$ref": "#/$defs/Unit"},
            "kind": {"const": "weather"},
            "level": {"type": "integer", "enum": [1, 2]},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "examples": ["a"]}},
            "extra": {"type": "object", "properties": {}},
        },
        "required": ["city"],
    }
    assert clean_schema(schema) == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "nullable": True, "description": "A city"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "kind": {"enum": ["weather"], "type": "string"},
            "level": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "extra": {"type": "object"},
        },
        "required": ["city"],
    }


def test_a_conversation_with_nothing_to_send_is_refused():
    with pytest.raises(RelayError) as refused:
        chat_to_gemini({"messages": [{"role": "system", "content": "only a system prompt"}]})
    assert refused.value.status == 400


def gemini_answer(**overrides) -> dict:
    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me think", "thought": True}, {"text": "Regen ✓ "}, {"text": "in Zürich."},
        {"functionCall": {"name": "radar", "args": {"city": "Zürich"}}, "thoughtSignature": "SIG"}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "cachedContentTokenCount": 20, "candidatesTokenCount": 30, "thoughtsTokenCount": 12,
                          "toolUsePromptTokenCount": 5, "totalTokenCount": 167},
        "modelVersion": "gemini-2.5-flash-001", "responseId": "r-1"}
    return dict(answer, **overrides)


def test_an_answer_becomes_an_openai_completion_with_normalised_usage():
    completion, usage, local = response_to_completion(gemini_answer(), "gemini-2.5-flash")
    message = completion["choices"][0]["message"]
    assert message["content"] == "Regen ✓ in Zürich." and message["reasoning_content"] == "Let me think"
    call = message["tool_calls"][0]
    assert call["function"]["name"] == "radar" and json.loads(call["function"]["arguments"]) == {"city": "Zürich"}
    assert call["id"].endswith("__ts__SIG")
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert (usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning) == (105, 20, 0, 30, 12)
    assert completion["model"] == "gemini-2.5-flash-001" and local > 0
    # The call id comes back with the signature, and the signature goes back to Gemini.
    body = chat_to_gemini({"messages": [{"role": "user", "content": "x"}, message, {"role": "tool", "tool_call_id": call["id"], "content": "{}"}]})
    assert body["contents"][1]["parts"][-1]["thoughtSignature"] == "SIG"
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "radar"


@pytest.mark.parametrize("reason,finish", [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                                           ("RECITATION", "content_filter"), ("OTHER", "stop")])
def test_finish_reasons(reason, finish):
    answer = gemini_answer(candidates=[{"content": {"role": "model", "parts": [{"text": "a"}]}, "finishReason": reason, "index": 0}])
    assert response_to_completion(answer, "g")[0]["choices"][0]["finish_reason"] == finish


def test_a_blocked_prompt_is_an_empty_content_filter_answer_and_garbage_is_refused():
    completion, usage, _ = response_to_completion({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}, "g")
    assert completion["choices"][0]["finish_reason"] == "content_filter" and completion["choices"][0]["message"]["content"] == ""
    assert usage.input == 9
    with pytest.raises(ValueError):
        response_to_completion({"unexpected": True}, "g")
