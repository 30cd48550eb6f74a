"""POST /v1/chat/completions in OpenAI format, streaming or not."""
from __future__ import annotations

from typing import Any

from relay import tokens
from relay.adapters.base import Adapter, ChatRequest, Operation, Target
from relay.attempt import Attempted, Terms
from relay.context import RequestContext
from relay.endpoints import calls, parsing
from relay.endpoints.base import HoldEstimate, choices_of, output_ceiling
from relay.errors import OPENAI
from relay.pricing import Price
from relay.settings import RelaySettings
from relay.upstream import UpstreamClient
from relay.validation import check
from relay.validation.openai import ChatBody


def parse_chat(body: bytes) -> ChatRequest:
    payload = parsing.json_object(body)
    spec = check(payload, ChatBody)
    stream = spec.stream is True
    wants_usage = stream and spec.stream_options is not None and spec.stream_options.include_usage is True
    max_tokens = spec.max_completion_tokens or spec.max_tokens
    return ChatRequest(model=spec.model, payload=payload, stream=stream, wants_usage=wants_usage, max_tokens=max_tokens)


class ChatEndpoint:
    operation = Operation.CHAT
    error_format = OPENAI
    billed = True

    def parse(self, body: bytes, environ: dict[str, Any]) -> ChatRequest:
        return parse_chat(body)

    def model_of(self, request: ChatRequest) -> str:
        return request.model

    def is_stream(self, request: ChatRequest) -> bool:
        return request.stream

    def estimate(self, request: ChatRequest, price: Price, settings: RelaySettings) -> HoldEstimate:
        messages = request.payload["messages"]
        tools = request.payload.get("tools")
        return HoldEstimate(
            prompt_tokens=tokens.hold_prompt_tokens(messages, tools),
            max_output_tokens=output_ceiling(request.max_tokens, price, settings),
            local_prompt_tokens=tokens.prompt_tokens(messages, tools),
            choices=choices_of(request.payload, "n"),
            cappable=True,
        )

    def cap_output(self, request: ChatRequest, limit: int) -> bool:
        """The caller's own field keeps the cap (`max_completion_tokens` if it used that); a channel
        that wants the other name gets it from its adapter."""
        if request.max_tokens is not None and request.max_tokens <= limit:
            return False
        request.max_tokens = limit
        field = "max_completion_tokens" if request.payload.get("max_completion_tokens") is not None else "max_tokens"
        request.payload[field] = limit
        return True

    def attempt(self, client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target,
                request: ChatRequest, terms: Terms) -> Attempted:
        def parse(body: bytes) -> calls.Parsed:
            result = adapter.chat_response(target, request, body)
            return result.body, result.usage, result.output_text_tokens

        return calls.answer(client, ctx, adapter, target, adapter.chat_request(target, request), terms,
                            decoder=adapter.chat_stream(target, request) if request.stream else None,
                            parse=parse, what="a chat completion")
