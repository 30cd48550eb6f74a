"""Anthropic's Messages API. Anthropic-format callers pass through natively (body with the model
swapped, events byte for byte); OpenAI-format chat is converted both ways (relay/formats/anthropic_*).

Channel config: `default_max_tokens` (Anthropic requires max_tokens; OpenAI callers often omit it).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from relay.adapters.base import (
    DEFAULT_ANTHROPIC_VERSION,
    AdapterInfo,
    ChatRequest,
    ChatResult,
    MessagesRequest,
    Operation,
    Target,
)
from relay.adapters.openai import api_base
from relay.channel_config import AnthropicConfig
from relay.errors import UpstreamError
from relay.formats.anthropic_request import chat_to_messages
from relay.formats.anthropic_stream import AnthropicChatStream, AnthropicNativeStream
from relay.formats.anthropic_wire import classify_anthropic, message_to_completion, usage_from_anthropic
from relay.snapshot import ChannelKeyView, ChannelView
from relay.tokens import text_tokens
from relay.upstream import HttpRequest

DEFAULT_MAX_TOKENS = 4096  # every current Claude model allows at least this many output tokens


class AnthropicAdapter:
    info = AdapterInfo(
        type="anthropic",
        label="Anthropic",
        capabilities=frozenset({Operation.CHAT, Operation.MESSAGES, Operation.COUNT_TOKENS, Operation.GENERATE_CONTENT, Operation.MODELS}),
        messages_native=True,
    )

    def headers(self, key: ChannelKeyView, version: str = DEFAULT_ANTHROPIC_VERSION, beta: str | None = None) -> dict[str, str]:
        headers = {"x-api-key": key.secret, "anthropic-version": version, "Content-Type": "application/json",
                   "Accept-Encoding": "identity"}
        if beta:
            headers["anthropic-beta"] = beta
        return headers

    def url(self, channel: ChannelView, path: str) -> str:
        return api_base(channel.base_url) + path

    # --- OpenAI-format chat, converted --------------------------------------------------------
    def chat_request(self, target: Target, request: ChatRequest) -> HttpRequest:
        config = target.channel.config
        default = (config.default_max_tokens if isinstance(config, AnthropicConfig) else None) or DEFAULT_MAX_TOKENS
        body = chat_to_messages(request.payload, target.upstream_model, default)
        return HttpRequest("POST", self.url(target.channel, "/messages"), self.headers(target.key), orjson.dumps(body))

    def chat_response(self, target: Target, request: ChatRequest, body: bytes) -> ChatResult:
        completion, usage, local = message_to_completion(orjson.loads(body))
        return ChatResult(body=orjson.dumps(completion), usage=usage, output_text_tokens=local)

    def chat_stream(self, target: Target, request: ChatRequest) -> AnthropicChatStream:
        return AnthropicChatStream(wants_usage=request.wants_usage)

    # --- Anthropic-format callers, natively ---------------------------------------------------
    def messages_request(self, target: Target, request: MessagesRequest) -> HttpRequest:
        payload = dict(request.payload, model=target.upstream_model)
        headers = self.headers(target.key, request.version, request.beta)
        return HttpRequest("POST", self.url(target.channel, "/messages"), headers, orjson.dumps(payload))

    def messages_response(self, target: Target, request: MessagesRequest, body: bytes) -> ChatResult:
        data = orjson.loads(body)
        if not isinstance(data, dict) or data.get("type") != "message":
            raise ValueError("not an Anthropic message")
        local = sum(text_tokens(b.get("text") or b.get("thinking") or "") for b in data.get("content") or () if isinstance(b, dict))
        return ChatResult(body=body, usage=usage_from_anthropic(data.get("usage")), output_text_tokens=local)

    def messages_stream(self, target: Target, request: MessagesRequest) -> AnthropicNativeStream:
        return AnthropicNativeStream()

    def count_tokens_request(self, target: Target, request: MessagesRequest) -> HttpRequest:
        payload = dict(request.payload, model=target.upstream_model)
        payload.pop("max_tokens", None)
        payload.pop("stream", None)
        headers = self.headers(target.key, request.version, request.beta)
        return HttpRequest("POST", self.url(target.channel, "/messages/count_tokens"), headers, orjson.dumps(payload))

    # --- shared -------------------------------------------------------------------------------
    def classify_error(self, status: int, body: bytes, headers: Mapping[str, Any]) -> UpstreamError:
        return classify_anthropic(status, body, headers)

    def models_request(self, channel: ChannelView, key: ChannelKeyView) -> HttpRequest:
        return HttpRequest("GET", self.url(channel, "/models?limit=1000"), self.headers(key))

    def models_response(self, body: bytes) -> list[str]:
        data = orjson.loads(body)
        return sorted(str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m)
