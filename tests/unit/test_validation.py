"""The inbound schemas (relay/validation/): what real clients send passes untouched, what does not
fit is named in OpenAI's and Anthropic's notation, form fields are read as text, and the stored
text limits agree with the SQL columns they land in."""
from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.models import UsageRollup
from controlplane.models.rollups import ChannelRollup
from relay.errors import ANTHROPIC, OPENAI, RelayError
from relay.validation import check, check_form, fields, model_name
from relay.validation.anthropic import CountTokensBody, MessagesBody
from relay.validation.openai import (
    ChatBody,
    CompletionBody,
    ResponsesBody,
    TranscriptionForm,
)
from workers.usage_fields import TEXT_LIMITS

CLAUDE_CODE = {  # the shape Claude Code 2.x sends (system turns inside messages, cache_control, thinking)
    "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "fix the bug"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "…", "signature": "sig"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "a.py"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "code"}]}]},
        {"role": "system", "content": [{"type": "text", "text": "<system-reminder>…</system-reminder>"}]},
    ],
    "tools": [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
              {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "metadata": {"user_id": "user_" + "a" * 64 + "_account__session_0b7c6a52-1f1e-4c5d-9a3e-2c4b1d7e8f90"},
    "context_management": {"edits": []},
}

CODEX = {  # the shape Codex CLI sends to /v1/responses
    "model": "gpt-5-codex", "instructions": "You are Codex.", "stream": True, "store": False, "parallel_tool_calls": False,
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
              {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
              {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
    "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}, {"type": "local_shell"}],
    "tool_choice": "auto", "reasoning": {"effort": "medium", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0b7c6a52-1f1e-4c5d-9a3e-2c4b1d7e8f90", "text": {"verbosity": "medium"},
}

SDK_CHAT = {  # what the OpenAI SDK sends for a tool round trip with an image
    "model": "gpt-4o", "temperature": 0, "top_p": 1, "n": 1, "stop": None, "max_completion_tokens": 500, "seed": 7,
    "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                "function": {"name": "look", "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ],
    "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object", "properties": {}}, "strict": True}}],
    "tool_choice": {"type": "function", "function": {"name": "look"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "stream": True, "stream_options": {"include_usage": True}, "metadata": {"team": "a"}, "logit_bias": {"50256": -100},
}


@pytest.mark.parametrize("payload,schema", [(CLAUDE_CODE, MessagesBody), (CLAUDE_CODE, CountTokensBody), (CODEX, ResponsesBody),
                                            (SDK_CHAT, ChatBody)], ids=["claude-code", "count-tokens", "codex", "openai-sdk"])
def test_what_real_clients_send_passes(payload, schema):
    spec = check(payload, schema)
    assert spec.model == payload["model"]


def refusal(payload: dict, schema, error_format: str = OPENAI) -> RelayError:
    with pytest.raises(RelayError) as raised:
        check(payload, schema, error_format)
    assert raised.value.status == 400 and raised.value.type == "invalid_request_error"
    return raised.value


def test_the_field_is_named_in_each_formats_notation():
    body = dict(CLAUDE_CODE, messages=[{"role": "user", "content": [{"type": "image", "source": "x"}]}])
    error = refusal(body, MessagesBody, ANTHROPIC)
    assert error.param == "messages[0].content[0].source"
    assert error.message == "messages.0.content.0.source: expected an object or null, got a string."
    error = refusal(dict(SDK_CHAT, temperature="hot"), ChatBody)
    assert (error.param, error.code, error.message) == ("temperature", "invalid_type", "temperature: expected a number or null, got a string.")
    assert refusal(dict(SDK_CHAT, temperature=2.5), ChatBody).code == "invalid_value"


def test_a_missing_field_is_named_with_its_parent():
    error = refusal({"model": "m", "messages": [{"content": "hi"}]}, ChatBody)
    assert (error.param, error.code) == ("messages[0].role", "missing_required_parameter")
    assert refusal({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, MessagesBody, ANTHROPIC).param == "max_tokens"


@pytest.mark.parametrize("name", ["", "m" * (fields.MODEL_MAX_CHARS + 1), "gpt\n", "gpt\x00x", "gpt\u202ex", "gpt\u200b", "a\x85b"])
def test_model_names_are_short_printable_text(name):
    with pytest.raises(RelayError) as raised:
        model_name(name)
    assert raised.value.param == "model"


def test_model_names_as_providers_spell_them_pass():
    for name in ("gpt-4o-mini", "models/gemini-2.5-pro", "anthropic/claude-3.5-sonnet:beta", "Qwen/Qwen2.5-72B-Instruct", "模型-1",
                 "m" * fields.MODEL_MAX_CHARS):
        assert model_name(name) == name


def test_cross_field_rules_name_the_field_to_fix():
    assert refusal({"model": "m", "prompt": "x", "n": 3, "best_of": 2}, CompletionBody).param == "best_of"
    assert refusal({"model": "m"}, ResponsesBody).param == "input"
    assert check({"model": "m", "previous_response_id": "resp_1"}, ResponsesBody).input is None


def test_form_fields_are_read_as_text():
    spec = check_form({"model": "whisper-1", "temperature": "0.2", "stream": "false", "timestamp_granularities[]": "word"}, TranscriptionForm)
    assert (spec.temperature, spec.stream) == (0.2, False)
    with pytest.raises(RelayError) as raised:
        check_form({"model": "whisper-1", "temperature": "warm"}, TranscriptionForm)
    assert raised.value.param == "temperature"


def test_the_rollups_hold_every_model_name_a_request_log_holds():
    """Ingestion cuts text to the request log's columns (workers/usage_fields.py); the rollups the
    same event is folded into must be as wide."""
    assert UsageRollup.__table__.columns["model"].type.length == ChannelRollup.__table__.columns["model"].type.length == TEXT_LIMITS["model"]
    assert fields.MODEL_MAX_CHARS >= TEXT_LIMITS["model"]  # longer names are never served: only refusals are logged cut


def test_every_limit_is_documented():
    text = (Path(__file__).parents[2] / "docs" / "limits.md").read_text()
    for value in (fields.MODEL_MAX_CHARS, fields.IDENTIFIER_MAX_CHARS, fields.MAX_MESSAGES, fields.MAX_TOOLS, fields.MAX_STOP,
                  fields.MAX_CHOICES, fields.MAX_EMBEDDING_INPUTS, fields.MAX_IMAGES, fields.MAX_OUTPUT_TOKENS, fields.METADATA_MAX_PAIRS,
                  fields.METADATA_KEY_MAX_CHARS, fields.METADATA_VALUE_MAX_CHARS, fields.LOGIT_BIAS_MAX_ENTRIES, *TEXT_LIMITS.values()):
        assert f"{value:,}" in text or str(value) in text, f"{value} is not in docs/limits.md"
