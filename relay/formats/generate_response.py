"""OpenAI chat answers → Gemini GenerateContentResponses, to serve Gemini-format callers through
OpenAI-shaped chat, and `Framing`: how a Gemini stream reaches its caller (SSE events with
alt=sse, else the elements of one JSON array, as Google serves it).

`GenerateStream` wraps any decoder that yields chat.completion.chunk dicts (OpenAI pass-through,
or Anthropic converted): text and thoughts go out as they arrive; tool calls, which OpenAI streams
in pieces and Gemini sends whole, go out with the finishing event, which also carries the finish
reason and usageMetadata.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from relay.formats.common import new_id, text_parts, tool_input
from relay.pricing import Usage
from relay.sse import StreamDecoder, StreamEvent

FINISH_TO_GEMINI: dict[str | None, str] = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "function_call": "STOP", "content_filter": "SAFETY"}


class Framing:
    """Gemini responses as the caller's stream: `data: …` events, or one JSON array built as they come."""

    __slots__ = ("sse", "started")

    def __init__(self, sse: bool):
        self.sse = sse
        self.started = False

    def frame(self, data: bytes) -> bytes:
        if self.sse:
            return b"data: " + data + b"\r\n\r\n"
        if self.started:
            return b",\r\n" + data
        self.started = True
        return b"[" + data

    def close(self) -> bytes:
        if self.sse:
            return b""
        return b"]" if self.started else b"[]"


def usage_metadata(usage: Usage | None) -> dict[str, Any]:
    """The five counts in Gemini's vocabulary (the prompt count includes cached tokens; cache
    writes, which Gemini does not report, are part of the prompt)."""
    u = usage or Usage()
    prompt = u.input + u.cache_read + u.cache_write
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": u.output, "totalTokenCount": prompt + u.output + u.reasoning}
    if u.cache_read:
        meta["cachedContentTokenCount"] = u.cache_read
    if u.reasoning:
        meta["thoughtsTokenCount"] = u.reasoning
    return meta


def call_part(call_id: object, name: object, arguments: object) -> dict[str, Any]:
    """A functionCall part; the OpenAI call id rides in `id`, which Gemini callers send back in
    the functionResponse, so the result finds its call."""
    call: dict[str, Any] = {"name": name or "", "args": tool_input(arguments)}
    if call_id:
        call["id"] = call_id
    return {"functionCall": call}


def finish_reason(openai_reason: str | None) -> str:
    return FINISH_TO_GEMINI.get(openai_reason, "STOP")


def completion_to_generate(data: dict[str, Any], usage: Usage | None, include_thoughts: bool) -> dict[str, Any]:
    """The GenerateContentResponse for an OpenAI chat.completion: one candidate per choice."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError("not a chat completion")
    candidates = []
    for n, choice in enumerate(choices):
        message = choice.get("message") or {}
        parts: list[dict[str, Any]] = []
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if include_thoughts and isinstance(reasoning, str) and reasoning:
            parts.append({"text": reasoning, "thought": True})
        text = "".join(text_parts(message.get("content"))) or message.get("refusal") or ""
        if text:
            parts.append({"text": text})
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            parts.append(call_part(call.get("id"), fn.get("name"), fn.get("arguments")))
        candidates.append({"content": {"role": "model", "parts": parts}, "finishReason": finish_reason(choice.get("finish_reason")),
                           "index": int(choice.get("index", n) or 0)})
    return {"candidates": candidates, "usageMetadata": usage_metadata(usage), "modelVersion": data.get("model") or "",
            "responseId": data.get("id") or new_id("resp_")}


class GenerateStream:
    """Gemini stream events from a stream of OpenAI chunks (`inner` yields StreamEvents with `chunk`)."""

    def __init__(self, inner: StreamDecoder, model: str, prompt_estimate: int, framing: Framing, include_thoughts: bool) -> None:
        self.inner = inner
        self.model = model
        self.prompt_estimate = prompt_estimate
        self.framing = framing
        self.include_thoughts = include_thoughts
        self.response_id: str | None = None
        self.model_version: str | None = None
        self.order: list[int] = []  # candidate indexes in the order they appeared
        self.calls: dict[int, dict[int, dict[str, Any]]] = {}  # candidate → OpenAI tool call index → id, name, arguments so far
        self.reasons: dict[int, str] = {}  # candidate → Gemini finish reason
        self.usage: Usage | None = None
        self.output = 0  # output tokens counted locally, for when the upstream reports no usage
        self.ended = False

    def feed(self, data: bytes) -> Iterator[StreamEvent]:
        for event in self.inner.feed(data):
            yield self._convert(event)

    def finish(self) -> Iterator[StreamEvent]:
        for event in self.inner.finish():
            yield self._convert(event)

    def _convert(self, event: StreamEvent) -> StreamEvent:
        if event.error is not None:
            return StreamEvent(raw=None, error=event.error)
        frames: list[bytes] = []
        self.output += event.output_tokens
        if event.chunk is not None and not self.ended:
            self.response_id = self.response_id or event.chunk.get("id")
            self.model_version = self.model_version or event.chunk.get("model")
            candidates = [c for c in map(self._candidate, event.chunk.get("choices") or ()) if c is not None]
            if candidates:
                frames.append(self.framing.frame(orjson.dumps(self._response(candidates))))
        if event.usage is not None:
            self.usage = event.usage
        if event.done and not self.ended:
            self.ended = True
            frames.append(self.framing.frame(orjson.dumps(self._final())))
            frames.append(self.framing.close())
        return StreamEvent(raw=b"".join(frames) or None, usage=event.usage, output_tokens=event.output_tokens, done=event.done)

    def _response(self, candidates: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"candidates": candidates}
        if usage is not None:
            body["usageMetadata"] = usage
        body["modelVersion"] = self.model_version or self.model
        body["responseId"] = self.response_id or new_id("resp_")
        self.response_id = body["responseId"]
        return body

    def _candidate(self, choice: dict[str, Any]) -> dict[str, Any] | None:
        index = int(choice.get("index") or 0)
        if index not in self.order:
            self.order.append(index)
        delta = choice.get("delta") or {}
        parts: list[dict[str, Any]] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if self.include_thoughts and isinstance(reasoning, str) and reasoning:
            parts.append({"text": reasoning, "thought": True})
        content = delta.get("content")
        if isinstance(content, str) and content:
            parts.append({"text": content})
        for call in delta.get("tool_calls") or ():
            entry = self.calls.setdefault(index, {}).setdefault(int(call.get("index") or 0), {"id": None, "name": "", "arguments": ""})
            fn = call.get("function") or {}
            entry["id"] = entry["id"] or call.get("id")
            entry["name"] += fn.get("name") or ""
            entry["arguments"] += fn.get("arguments") or ""
        if choice.get("finish_reason"):
            self.reasons[index] = finish_reason(choice["finish_reason"])
        return {"content": {"role": "model", "parts": parts}, "index": index} if parts else None

    def _final(self) -> dict[str, Any]:
        candidates = []
        for index in self.order or [0]:
            calls = [call_part(c["id"], c["name"], c["arguments"]) for _, c in sorted(self.calls.get(index, {}).items())]
            candidates.append({"content": {"role": "model", "parts": calls or [{"text": ""}]},
                               "finishReason": self.reasons.get(index, "STOP"), "index": index})
        usage = self.usage if self.usage is not None else Usage(input=self.prompt_estimate, output=self.output)
        return self._response(candidates, usage_metadata(usage))
