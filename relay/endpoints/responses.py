"""POST /v1/responses (OpenAI's Responses API), forwarded to OpenAI-shaped channels, streamed or
not, billed from the usage of the finished response.

A streamed response is a sequence of named events (response.created … response.output_text.delta
… response.completed); they pass through byte for byte, and the usage is read from the terminal
event (completed or incomplete). response.failed and error events end the stream as failures.
"""
from __future__ import annotations

from typing import Any

import orjson

from relay import tokens
from relay.adapters.base import Operation
from relay.adapters.openai import usage_from_openai
from relay.attempt import Terms
from relay.endpoints.base import HoldEstimate, output_ceiling
from relay.endpoints.forward import Forwarded, ForwardedEndpoint, Outcome
from relay.errors import ErrorKind, UpstreamError
from relay.pricing import Price
from relay.settings import RelaySettings
from relay.sse import NOT_SSE, EventDecoder, StreamEvent, event_data, is_sse
from relay.validation.openai import ResponsesBody

TERMINAL = {"response.completed", "response.incomplete"}
DELTAS = {"response.output_text.delta", "response.reasoning_summary_text.delta", "response.function_call_arguments.delta",
          "response.refusal.delta", "response.reasoning_text.delta"}


def input_tokens(value: object) -> int:
    """The text of a Responses input: a string, or items whose content is a string or parts."""
    if isinstance(value, str):
        return tokens.text_tokens(value)
    total = 0
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict):
            continue
        content = item.get("content", item.get("output"))
        if isinstance(content, str):
            total += tokens.text_tokens(content)
        for part in content if isinstance(content, list) else ():
            total += tokens.part_tokens(part)
        total += tokens.text_tokens(item.get("arguments") or "")
    return total


def output_tokens(response: dict[str, Any]) -> int:
    total = 0
    for item in response.get("output") or ():
        for part in item.get("content") or () if isinstance(item, dict) else ():
            total += tokens.text_tokens(part.get("text") or "") if isinstance(part, dict) else 0
        total += tokens.text_tokens(item.get("arguments") or "") if isinstance(item, dict) else 0
    return total


class ResponsesStreamDecoder(EventDecoder):
    def __init__(self) -> None:
        super().__init__()

    def _decode(self, event: bytes) -> StreamEvent:
        data = event_data(event)
        if data is None:
            if not is_sse(event):
                return StreamEvent(raw=None, error=UpstreamError(ErrorKind.INVALID_RESPONSE, 200, NOT_SSE))
            return StreamEvent(raw=event + b"\n\n")
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return StreamEvent(raw=None, error=UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "malformed stream event"))
        kind = obj.get("type") if isinstance(obj, dict) else None
        out = StreamEvent(raw=event + b"\n\n")
        if kind in DELTAS:
            out.output_tokens = tokens.text_tokens(obj.get("delta") or "")
        elif kind in TERMINAL:
            out.usage = usage_from_openai((obj.get("response") or {}).get("usage"))
            out.done = True
        elif kind in ("response.failed", "error"):
            error = (obj.get("response") or {}).get("error") or obj.get("error") or obj
            message = error.get("message") if isinstance(error, dict) else None
            return StreamEvent(raw=None, error=UpstreamError(ErrorKind.TRANSIENT, 200, str(message or "the response failed")))
        return out


class ResponsesEndpoint(ForwardedEndpoint):
    operation = Operation.RESPONSES
    what = "a response"
    streams = True
    schema = ResponsesBody

    def estimate(self, request: Forwarded, price: Price, settings: RelaySettings) -> HoldEstimate:
        payload = request.payload
        prompt = input_tokens(payload.get("input")) + tokens.text_tokens(payload.get("instructions") or "")
        if payload.get("tools"):
            prompt += tokens.text_tokens(orjson.dumps(payload["tools"]).decode())
        return HoldEstimate(prompt_tokens=2 * prompt, max_output_tokens=output_ceiling(payload.get("max_output_tokens"), price, settings),
                            local_prompt_tokens=prompt, cappable=True)

    def cap_output(self, request: Forwarded, limit: int) -> bool:
        asked = request.payload.get("max_output_tokens")
        if asked is not None and asked <= limit:
            return False
        request.payload["max_output_tokens"] = limit
        return True

    def decoder(self, request: Forwarded) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder()

    def outcome(self, request: Forwarded, body: bytes, terms: Terms) -> Outcome:
        data = orjson.loads(body)
        if data.get("object") != "response":
            raise ValueError("not a response")
        return Outcome(usage_from_openai(data.get("usage")), output_tokens(data))
