"""POST /v1/messages and /v1/messages/count_tokens in Anthropic format.

Anthropic channels serve them natively. Every other chat-capable channel serves /v1/messages by
conversion: the request becomes OpenAI chat, the adapter does what it does with chat, and the
answer (or stream) is turned back into Anthropic's shape. Errors are Anthropic-format.
"""
from __future__ import annotations

from typing import Any

import orjson

from relay import tokens
from relay.adapters.base import (
    DEFAULT_ANTHROPIC_VERSION,
    Adapter,
    ChatRequest,
    MessagesAdapter,
    MessagesRequest,
    Operation,
    Target,
)
from relay.attempt import Answer, Attempted, Terms
from relay.context import RequestContext, json_response
from relay.endpoints import calls
from relay.endpoints.base import HoldEstimate, output_ceiling
from relay.endpoints.parsing import json_object
from relay.errors import ANTHROPIC, UpstreamError
from relay.formats.messages_request import messages_to_chat
from relay.formats.messages_response import MessagesStream, completion_to_message
from relay.pricing import Price
from relay.settings import RelaySettings
from relay.upstream import UpstreamClient
from relay.validation import check
from relay.validation.anthropic import CountTokensBody, MessagesBody


def parse_messages(body: bytes, environ: dict[str, Any], schema: type[CountTokensBody]) -> MessagesRequest:
    payload = json_object(body)
    spec = check(payload, schema, ANTHROPIC)
    return MessagesRequest(
        model=spec.model,
        payload=payload,
        stream=getattr(spec, "stream", None) is True,
        max_tokens=getattr(spec, "max_tokens", None),
        version=environ.get("HTTP_ANTHROPIC_VERSION") or DEFAULT_ANTHROPIC_VERSION,
        beta=environ.get("HTTP_ANTHROPIC_BETA") or None,
    )


# Anthropic's smallest extended-thinking budget; it must also stay below max_tokens.
MIN_THINKING_BUDGET = 1024


def cap_thinking(payload: dict[str, Any], max_tokens: int) -> None:
    """Keep a thinking budget valid under a lowered max_tokens: below it, or off when the cap leaves
    no room for the smallest budget Anthropic accepts (the answer is then written without thinking)."""
    thinking = payload.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if isinstance(budget, int) and budget < max_tokens:
        return
    if max_tokens - 1 >= MIN_THINKING_BUDGET:
        payload["thinking"] = dict(thinking, budget_tokens=max_tokens - 1)
    else:
        payload.pop("thinking", None)


def as_chat(request: MessagesRequest, target: Target, output_cap: int | None) -> ChatRequest:
    """The request as OpenAI chat for a converting channel. Anthropic clients ask for large
    max_tokens (Claude Code: 32k) that other models refuse outright; the price's output cap, when
    the operator set one, bounds it."""
    field = target.channel.config.output_limit_field or "max_tokens"
    payload = messages_to_chat(request.payload, target.upstream_model, field)
    if output_cap and payload.get(field, 0) > output_cap:
        payload[field] = output_cap
    return ChatRequest(model=request.model, payload=payload, stream=request.stream, wants_usage=True,
                       max_tokens=payload.get(field), chunks_only=True)


class MessagesEndpoint:
    operation = Operation.MESSAGES
    error_format = ANTHROPIC
    billed = True

    def parse(self, body: bytes, environ: dict[str, Any]) -> MessagesRequest:
        return parse_messages(body, environ, MessagesBody)

    def model_of(self, request: MessagesRequest) -> str:
        return request.model

    def is_stream(self, request: MessagesRequest) -> bool:
        return request.stream

    def estimate(self, request: MessagesRequest, price: Price, settings: RelaySettings) -> HoldEstimate:
        local = tokens.anthropic_prompt_tokens(request.payload)
        return HoldEstimate(prompt_tokens=2 * local, max_output_tokens=output_ceiling(request.max_tokens, price, settings),
                            local_prompt_tokens=local, cappable=True)

    def cap_output(self, request: MessagesRequest, limit: int) -> bool:
        if request.max_tokens is not None and request.max_tokens <= limit:
            return False
        request.max_tokens = limit
        request.payload["max_tokens"] = limit
        cap_thinking(request.payload, limit)
        return True

    def attempt(self, client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target,
                request: MessagesRequest, terms: Terms) -> Attempted:
        if adapter.info.messages_native:
            return self._native(client, ctx, adapter, target, request, terms)
        chat = as_chat(request, target, terms.price.max_output_tokens)

        def parse(body: bytes) -> calls.Parsed:
            result = adapter.chat_response(target, chat, body)
            return orjson.dumps(completion_to_message(orjson.loads(result.body), result.usage)), result.usage, result.output_text_tokens

        decoder = MessagesStream(adapter.chat_stream(target, chat), target.upstream_model, terms.prompt_estimate) if request.stream else None
        return calls.answer(client, ctx, adapter, target, adapter.chat_request(target, chat), terms,
                            decoder=decoder, parse=parse, what="a chat completion", error_format=ANTHROPIC)

    def _native(self, client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target,
                request: MessagesRequest, terms: Terms) -> Attempted:
        native: MessagesAdapter = adapter  # type: ignore[assignment]  # info.messages_native: it has messages_*

        def parse(body: bytes) -> calls.Parsed:
            result = native.messages_response(target, request, body)
            return result.body, result.usage, result.output_text_tokens

        return calls.answer(client, ctx, adapter, target, native.messages_request(target, request), terms,
                            decoder=native.messages_stream(target, request) if request.stream else None,
                            parse=parse, what="an Anthropic message", error_format=ANTHROPIC)


class CountTokensEndpoint:
    """Free: Anthropic channels count upstream; others answer the relay's local estimate."""

    operation = Operation.COUNT_TOKENS
    error_format = ANTHROPIC
    billed = False

    def parse(self, body: bytes, environ: dict[str, Any]) -> MessagesRequest:
        return parse_messages(body, environ, CountTokensBody)

    def model_of(self, request: MessagesRequest) -> str:
        return request.model

    def is_stream(self, request: MessagesRequest) -> bool:
        return False

    def estimate(self, request: MessagesRequest, price: Price, settings: RelaySettings) -> HoldEstimate:
        return HoldEstimate(0, 0, 0)

    def attempt(self, client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target,
                request: MessagesRequest, terms: Terms | None) -> Attempted:
        if not adapter.info.messages_native:
            return Answer(json_response(200, orjson.dumps({"input_tokens": tokens.anthropic_prompt_tokens(request.payload)})), None)
        native: MessagesAdapter = adapter  # type: ignore[assignment]  # info.messages_native: it has count_tokens_request
        response = calls.send(client, adapter, target, native.count_tokens_request(target, request))
        if isinstance(response, UpstreamError):
            return response
        body = calls.read(response)
        if isinstance(body, UpstreamError):
            return body
        try:
            count = orjson.loads(body)["input_tokens"]
        except (ValueError, KeyError, TypeError):
            return calls.invalid("a token count")
        return Answer(json_response(200, orjson.dumps({"input_tokens": int(count)})), None)
