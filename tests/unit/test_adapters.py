"""Adapters: where each sends a request (URLs, auth headers, versions, deployments, model
mapping), that every declared capability is backed by the methods it needs, and how each
provider's errors are classified into kinds (table-tested)."""
from __future__ import annotations

import orjson
import pytest

from relay.adapters import REGISTRY, ChatRequest, MessagesRequest, Operation, Target, adapter_for
from relay.adapters.base import GenerateRequest
from relay.channel_config import parse_config
from relay.errors import ErrorKind
from relay.snapshot import ChannelKeyView, ChannelView

KEY = ChannelKeyView(id=1, secret="sk-secret")
FORWARDED = {Operation.COMPLETIONS, Operation.EMBEDDINGS, Operation.IMAGES, Operation.SPEECH, Operation.TRANSCRIPTION,
             Operation.MODERATIONS, Operation.RESPONSES}


def target(kind: str, base_url: str, upstream: str = "up-model", **config) -> Target:
    channel = ChannelView(id=1, name="c", type=kind, base_url=base_url, models=(), keys=(KEY,), model_map={"public": upstream},
                          config=parse_config(kind, config))
    return Target(channel, KEY, upstream)


def chat(stream: bool = False) -> ChatRequest:
    return ChatRequest(model="public", payload={"model": "public", "messages": [{"role": "user", "content": "hi"}], "stream": stream}, stream=stream)


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_declared_capability_has_the_methods_behind_it(kind):
    adapter = REGISTRY[kind]
    needs = {Operation.CHAT: ("chat_request", "chat_response", "chat_stream"), Operation.MODELS: ("models_request", "models_response")}
    if adapter.info.messages_native:
        needs[Operation.MESSAGES] = ("messages_request", "messages_response", "messages_stream")
        needs[Operation.COUNT_TOKENS] = ("count_tokens_request",)
    if adapter.info.generate_native:
        needs[Operation.GENERATE_CONTENT] = ("generate_request", "generate_response", "generate_stream", "generate_count_request")
    for operation in FORWARDED:
        needs[operation] = ("forward_request",)
    for operation in adapter.info.capabilities:
        for method in needs.get(operation, ("chat_request",)):
            assert callable(getattr(adapter, method, None)), f"{kind} declares {operation.value} without {method}"
    assert callable(adapter.classify_error)


def test_openai_compatible_servers_are_a_base_url():
    adapter = adapter_for("openai")
    request = adapter.chat_request(target("openai", "http://vllm:8000"), chat(stream=True))
    assert request.url == "http://vllm:8000/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-secret"
    body = orjson.loads(request.body)
    assert body["model"] == "up-model" and body["stream_options"] == {"include_usage": True}
    embed = adapter.forward_request(target("openai", "https://api.deepseek.com/v1"), Operation.EMBEDDINGS, b"{}")
    assert embed.url == "https://api.deepseek.com/v1/embeddings"


def test_azure_uses_deployments_api_version_and_api_key():
    adapter = adapter_for("azure")
    request = adapter.chat_request(target("azure", "https://res.openai.azure.com/openai/", "gpt 4o prod", api_version="2025-01-01-preview"), chat())
    assert request.url == "https://res.openai.azure.com/openai/deployments/gpt%204o%20prod/chat/completions?api-version=2025-01-01-preview"
    assert request.headers["api-key"] == "sk-secret" and "Authorization" not in request.headers
    responses = adapter.forward_request(target("azure", "https://res.openai.azure.com"), Operation.RESPONSES, b"{}")
    assert responses.url == "https://res.openai.azure.com/openai/responses?api-version=2025-04-01-preview"
    speech = adapter.forward_request(target("azure", "https://res.openai.azure.com", "tts"), Operation.SPEECH, b"{}")
    assert speech.url == "https://res.openai.azure.com/openai/deployments/tts/audio/speech?api-version=2024-10-21"


def test_anthropic_sends_its_headers_and_forwards_the_callers_version_and_betas():
    adapter = adapter_for("anthropic")
    converted = adapter.chat_request(target("anthropic", "https://api.anthropic.com", default_max_tokens=1234), chat())
    assert converted.url == "https://api.anthropic.com/v1/messages"
    assert converted.headers["x-api-key"] == "sk-secret" and converted.headers["anthropic-version"] == "2023-06-01"
    assert orjson.loads(converted.body)["max_tokens"] == 1234
    native = adapter.messages_request(target("anthropic", "https://api.anthropic.com/v1"), MessagesRequest(
        model="public", payload={"model": "public", "max_tokens": 5, "messages": []}, version="2024-01-01", beta="tools-2024"))
    assert native.headers["anthropic-version"] == "2024-01-01" and native.headers["anthropic-beta"] == "tools-2024"
    assert orjson.loads(native.body)["model"] == "up-model"


def test_gemini_urls_for_json_and_sse_with_the_key_in_a_header():
    adapter = adapter_for("gemini")
    plain = adapter.chat_request(target("gemini", "https://generativelanguage.googleapis.com", "models/gemini-2.5-pro"), chat())
    assert plain.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent"
    streamed = adapter.chat_request(target("gemini", "https://proxy.example/v1alpha"), chat(stream=True))
    assert streamed.url == "https://proxy.example/v1alpha/models/up-model:streamGenerateContent?alt=sse"
    assert plain.headers["x-goog-api-key"] == "sk-secret" and "key=" not in plain.url


def test_gemini_callers_bodies_go_up_as_received_with_the_model_in_the_url_mapped():
    adapter = adapter_for("gemini")
    body = b'{"contents": [{"parts": [{"text": "hi"}]}], "safetySettings": []}'
    streamed = adapter.generate_request(target("gemini", "https://generativelanguage.googleapis.com"),
                                        GenerateRequest(model="public", payload={}, body=body, stream=True, sse=False))
    assert streamed.url == "https://generativelanguage.googleapis.com/v1beta/models/up-model:streamGenerateContent?alt=sse"
    assert streamed.body == body  # byte for byte
    nested = {"generateContentRequest": {"model": "models/public", "contents": []}}
    count = adapter.generate_count_request(target("gemini", "https://g.example"), GenerateRequest(model="public", payload=nested, body=b""))
    assert count.url == "https://g.example/v1beta/models/up-model:countTokens"
    assert orjson.loads(count.body)["generateContentRequest"]["model"] == "models/up-model"


ANTHROPIC_ERRORS = [
    (401, "authentication_error", ErrorKind.AUTH),
    (403, "permission_error", ErrorKind.PERMISSION),
    (402, "billing_error", ErrorKind.QUOTA),
    (429, "rate_limit_error", ErrorKind.RATE_LIMIT),
    (529, "overloaded_error", ErrorKind.OVERLOADED),
    (500, "api_error", ErrorKind.TRANSIENT),
    (504, "timeout_error", ErrorKind.TIMEOUT),
    (404, "not_found_error", ErrorKind.NOT_FOUND),
    (400, "invalid_request_error", ErrorKind.BAD_REQUEST),
    (413, "request_too_large", ErrorKind.BAD_REQUEST),
    (502, None, ErrorKind.TRANSIENT),
]


@pytest.mark.parametrize("status,kind,expected", ANTHROPIC_ERRORS)
def test_anthropic_error_kinds(status, kind, expected):
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": "m"}}) if kind else b"<html>bad gateway</html>"
    error = adapter_for("anthropic").classify_error(status, body, {"retry-after": "7"})
    assert (error.kind, error.status, error.retry_after) == (expected, status, 7.0)


GEMINI_ERRORS = [
    (400, "INVALID_ARGUMENT", "API_KEY_INVALID", ErrorKind.AUTH),
    (400, "INVALID_ARGUMENT", None, ErrorKind.BAD_REQUEST),
    (400, "FAILED_PRECONDITION", None, ErrorKind.QUOTA),
    (403, "PERMISSION_DENIED", None, ErrorKind.AUTH),
    (404, "NOT_FOUND", None, ErrorKind.NOT_FOUND),
    (429, "RESOURCE_EXHAUSTED", None, ErrorKind.RATE_LIMIT),
    (500, "INTERNAL", None, ErrorKind.TRANSIENT),
    (503, "UNAVAILABLE", None, ErrorKind.OVERLOADED),
    (504, "DEADLINE_EXCEEDED", None, ErrorKind.TIMEOUT),
]


@pytest.mark.parametrize("status,code,reason,expected", GEMINI_ERRORS)
def test_gemini_error_kinds(status, code, reason, expected):
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}] if reason else []
    body = orjson.dumps({"error": {"code": status, "message": "m", "status": code, "details": details}})
    assert adapter_for("gemini").classify_error(status, body, {}).kind == expected


def test_azure_content_filter_is_a_content_policy_error():
    body = orjson.dumps({"error": {"code": "content_filter", "message": "The response was filtered", "status": 400}})
    assert adapter_for("azure").classify_error(400, body, {}).kind == ErrorKind.CONTENT_POLICY


@pytest.mark.parametrize("status,body,expected", [
    (401, b'{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}', ErrorKind.AUTH),
    (401, b'{"error":{"message":"deactivated","code":"account_deactivated"}}', ErrorKind.AUTH),
    (403, b'{"error":{"message":"Project does not have access to model gpt-5","code":"model_not_found"}}', ErrorKind.PERMISSION),
    (403, b'{"error":{"message":"Country, region, or territory not supported","code":"unsupported_country_region_territory"}}', ErrorKind.PERMISSION),
    (429, b'{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}', ErrorKind.QUOTA),
    (429, b'{"error":{"message":"Rate limit reached"}}', ErrorKind.RATE_LIMIT),
])
def test_openai_errors_prove_a_key_dead_only_when_they_say_so(status, body, expected):
    """A 403 names a model or a region, not the key: classifying it as a dead key would disable a key
    that still serves every other model."""
    assert adapter_for("openai").classify_error(status, body, {}).kind is expected

