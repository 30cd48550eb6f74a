"""OpenAI and every OpenAI-compatible server (DeepSeek, Qwen, Mistral, Groq, vLLM, Ollama, …).

Chat requests pass through with only the model name and stream usage option changed; responses pass
through byte for byte. The other OpenAI endpoints (completions, embeddings, images, audio,
moderations, responses) are forwarded with the body the endpoint prepared. This adapter is the
base the other OpenAI-shaped providers (Azure) specialise.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson

from relay.adapters.base import (
    AdapterInfo,
    ChatRequest,
    ChatResult,
    Operation,
    StreamEvent,
    Target,
)
from relay.errors import ErrorKind, UpstreamError
from relay.formats.common import retry_after
from relay.pricing import Usage
from relay.snapshot import ChannelKeyView, ChannelView
from relay.sse import NOT_SSE, EventDecoder, event_data, is_sse
from relay.tokens import text_tokens
from relay.upstream import HttpRequest

_USAGE_NULLS = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')
MAX_MESSAGE = 500


def usage_from_openai(u: dict[str, Any] | None) -> Usage | None:
    """Normalise OpenAI's usage: prompt_tokens include cached ones, completion_tokens reasoning."""
    if not isinstance(u, dict):
        return None
    prompt = int(u.get("prompt_tokens") or u.get("input_tokens") or 0)
    completion = int(u.get("completion_tokens") or u.get("output_tokens") or 0)
    prompt_details = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or u.get("output_tokens_details") or {}
    cached = int(prompt_details.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0)
    cache_write = int(prompt_details.get("cache_write_tokens") or prompt_details.get("cache_creation_tokens") or 0)
    reasoning = int(completion_details.get("reasoning_tokens") or 0)
    cached = min(cached, prompt)
    cache_write = min(cache_write, prompt - cached)
    reasoning = min(reasoning, completion)
    return Usage(
        input=prompt - cached - cache_write,
        cache_read=cached,
        cache_write=cache_write,
        output=completion - reasoning,
        reasoning=reasoning,
    )


# The two names OpenAI's chat API has had for the output limit. Its reasoning models refuse the old
# one; many OpenAI-compatible servers know only the old one.
OUTPUT_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


def output_limit_field(target: Target) -> str | None:
    """The name this channel wants for the output limit: its `max_tokens_field` setting, else the
    current name for OpenAI's own API, else whatever the caller sent."""
    configured = target.channel.config.output_limit_field
    if configured is not None:
        return configured
    return "max_completion_tokens" if _is_openai(target.channel.base_url) else None


@lru_cache(maxsize=1024)
def _is_openai(base_url: str) -> bool:
    # Parsed once per channel URL rather than on every request.
    return urlsplit(base_url).hostname == "api.openai.com"


def rename_output_limit(payload: dict[str, Any], field: str | None) -> None:
    if field is None:
        return
    other = OUTPUT_LIMIT_FIELDS[1] if field == OUTPUT_LIMIT_FIELDS[0] else OUTPUT_LIMIT_FIELDS[0]
    if payload.get(other) is not None:
        value = payload.pop(other)
        if payload.get(field) is None:
            payload[field] = value
    else:
        payload.pop(other, None)


def api_base(base_url: str) -> str:
    """The base every path hangs off: the operator's URL, with /v1 added when it names no path."""
    base = base_url.rstrip("/")
    if urlsplit(base).path in ("", "/"):
        base += "/v1"
    return base


def message_of(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, type, code) from an OpenAI-format error body, tolerating anything."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:MAX_MESSAGE].decode("utf-8", "replace"), None, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or "")[:MAX_MESSAGE], err.get("type"), err.get("code")
    if isinstance(err, str):
        return err[:MAX_MESSAGE], None, None
    return str(data)[:MAX_MESSAGE], None, None


_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "quota_exceeded"}
_AUTH_CODES = {"invalid_api_key", "account_deactivated", "invalid_organization", "organization_deactivated"}
_POLICY_CODES = {"content_policy_violation", "content_filter", "moderation_blocked"}


def classify_openai(status: int, body: bytes, headers: Mapping[str, Any]) -> UpstreamError:
    message, err_type, code = message_of(body)
    tags = {str(err_type or ""), str(code or "")}
    if tags & _QUOTA_CODES or status == 402:
        kind = ErrorKind.QUOTA
    elif tags & _AUTH_CODES or status == 401:
        kind = ErrorKind.AUTH
    elif status == 403:  # no access to this model, or from this region: not proof the key is dead
        kind = ErrorKind.PERMISSION
    elif tags & _POLICY_CODES:
        kind = ErrorKind.CONTENT_POLICY
    elif status == 429:
        kind = ErrorKind.RATE_LIMIT
    elif status in (503, 529):
        kind = ErrorKind.OVERLOADED
    elif status == 404:
        kind = ErrorKind.NOT_FOUND
    elif status in (408, 504):
        kind = ErrorKind.TIMEOUT
    elif 400 <= status < 500 and status != 409:
        kind = ErrorKind.BAD_REQUEST
    else:
        kind = ErrorKind.TRANSIENT
    return UpstreamError(kind, status, message or f"upstream status {status}", retry_after(headers))


def output_tokens_of_delta(choices: Any) -> int:
    tokens = 0
    for choice in choices or ():
        delta = choice.get("delta") or choice.get("message") or {}
        if isinstance(choice.get("text"), str):  # legacy completions
            tokens += text_tokens(choice["text"])
        content = delta.get("content")
        if isinstance(content, str):
            tokens += text_tokens(content)
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str):
            tokens += text_tokens(reasoning)
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") or {}
            tokens += text_tokens(fn.get("name") or "") + text_tokens(fn.get("arguments") or "")
    return tokens


class OpenAIStreamDecoder(EventDecoder):
    """Passes chat.completion.chunk events through as they came, reading usage on the way.

    When the relay asked for usage the caller did not, the usage-only chunk is dropped and the
    `"usage":null` members the upstream adds to every chunk are cut out (a byte replace, no re-encode).
    """

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        super().__init__()

    def _decode(self, event: bytes) -> StreamEvent:
        data: bytes | None
        if event.startswith(b"data: ") and b"\n" not in event:  # one data line: nearly every event
            data = event[6:]
        else:
            data = event_data(event)
            if data is None:  # a comment or keep-alive: pass it on, it keeps proxies from timing out
                if not is_sse(event):
                    return StreamEvent(raw=None, error=UpstreamError(ErrorKind.INVALID_RESPONSE, 200, NOT_SSE))
                return StreamEvent(raw=event + b"\n\n")
        if data == b"[DONE]":
            return StreamEvent(raw=b"data: [DONE]\n\n", done=True)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return StreamEvent(raw=None, error=UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "malformed stream event"))
        if not isinstance(chunk, dict):
            return StreamEvent(raw=None, error=UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "malformed stream event"))
        if "error" in chunk and not chunk.get("choices"):
            message, _, _ = message_of(data)
            return StreamEvent(raw=None, error=UpstreamError(ErrorKind.TRANSIENT, 200, message))
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if usage is not None:
            usage = usage_from_openai(usage)
        raw: bytes | None  # None: the usage-only chunk the caller did not ask for is dropped
        raw = event + b"\n\n"
        if self.strip_usage:
            if usage is not None and not choices:
                raw = None
            elif b'"usage"' in raw:
                for pattern in _USAGE_NULLS:
                    if pattern in raw:
                        raw = raw.replace(pattern, b"", 1)
                        break
        return StreamEvent(raw=raw, chunk=chunk, usage=usage, output_tokens=output_tokens_of_delta(choices))


# Where each forwarded operation goes, under the API base.
PATHS = {
    Operation.CHAT: "/chat/completions",
    Operation.COMPLETIONS: "/completions",
    Operation.EMBEDDINGS: "/embeddings",
    Operation.IMAGES: "/images/generations",
    Operation.SPEECH: "/audio/speech",
    Operation.TRANSCRIPTION: "/audio/transcriptions",
    Operation.MODERATIONS: "/moderations",
    Operation.RESPONSES: "/responses",
}


class OpenAIAdapter:
    info = AdapterInfo(
        type="openai",
        label="OpenAI-compatible",
        capabilities=frozenset({
            Operation.CHAT, Operation.MESSAGES, Operation.COUNT_TOKENS, Operation.GENERATE_CONTENT, Operation.COMPLETIONS, Operation.EMBEDDINGS,
            Operation.IMAGES, Operation.SPEECH, Operation.TRANSCRIPTION, Operation.MODERATIONS, Operation.RESPONSES,
            Operation.MODELS,
        }),
    )

    def headers(self, key: ChannelKeyView, content_type: str = "application/json") -> dict[str, str]:
        return {"Authorization": f"Bearer {key.secret}", "Content-Type": content_type, "Accept-Encoding": "identity"}

    def url(self, channel: ChannelView, path: str) -> str:
        return api_base(channel.base_url) + path

    def operation_url(self, target: Target, operation: Operation, path: str | None = None) -> str:
        return self.url(target.channel, path or PATHS[operation])

    def forward_request(self, target: Target, operation: Operation, body: bytes, content_type: str = "application/json",
                        path: str | None = None) -> HttpRequest:
        """One of the OpenAI endpoints the relay forwards as they are (the endpoint set the model)."""
        return HttpRequest("POST", self.operation_url(target, operation, path), self.headers(target.key, content_type), body)

    def chat_payload(self, target: Target, request: ChatRequest) -> dict[str, Any]:
        payload = dict(request.payload)
        payload["model"] = target.upstream_model
        rename_output_limit(payload, output_limit_field(target))
        if request.stream:
            # Always ask for usage: billing needs it even when the caller does not.
            options = dict(payload.get("stream_options") or {})
            options["include_usage"] = True
            payload["stream_options"] = options
        return payload

    def chat_request(self, target: Target, request: ChatRequest) -> HttpRequest:
        return self.forward_request(target, Operation.CHAT, orjson.dumps(self.chat_payload(target, request)))

    def chat_response(self, target: Target, request: ChatRequest, body: bytes) -> ChatResult:
        data = orjson.loads(body)  # the pipeline turns a decode error into a 502
        if not isinstance(data, dict) or "choices" not in data:
            raise ValueError("not a chat completion")
        return ChatResult(body=body, usage=usage_from_openai(data.get("usage")), output_text_tokens=output_tokens_of_delta(data.get("choices")))

    def chat_stream(self, target: Target, request: ChatRequest) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(strip_usage=not request.wants_usage)

    def classify_error(self, status: int, body: bytes, headers: Mapping[str, Any]) -> UpstreamError:
        return classify_openai(status, body, headers)

    def models_request(self, channel: ChannelView, key: ChannelKeyView) -> HttpRequest:
        return HttpRequest("GET", self.url(channel, "/models"), self.headers(key))

    def models_response(self, body: bytes) -> list[str]:
        data = orjson.loads(body)
        return sorted(str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m)
