"""OpenAI chat answers → Anthropic Messages answers, to serve /v1/messages through OpenAI-shaped chat.

`MessagesStream` wraps any decoder that yields chat.completion.chunk dicts (OpenAI pass-through,
or Gemini converted) and emits Anthropic's event sequence: message_start, content blocks
(thinking, text, tool_use) each opened, filled and closed in turn, message_delta with the stop
reason and usage, message_stop.
"""
from __future__ import annotations

from typing import Any, Iterator

from relay.formats.common import named_sse, new_id, text_parts, tool_input
from relay.pricing import Usage
from relay.sse import StreamDecoder, StreamEvent

FINISH_TO_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                  "content_filter": "refusal"}


def anthropic_usage(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    return {"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cache_read,
            "output_tokens": u.output + u.reasoning}


def message_id(openai_id: object) -> str:
    return openai_id if isinstance(openai_id, str) and openai_id.startswith("msg_") else new_id("msg_")


def completion_to_message(data: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """The Anthropic Message for an OpenAI chat.completion (its first choice)."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError("not a chat completion")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = "".join(text_parts(message.get("content"))) or message.get("refusal") or ""
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or new_id("toolu_"), "name": fn.get("name") or "",
                        "input": tool_input(fn.get("arguments"))})
    stop = FINISH_TO_STOP.get(choice.get("finish_reason"), "end_turn")
    if stop == "end_turn" and message.get("tool_calls"):
        stop = "tool_use"
    return {"id": message_id(data.get("id")), "type": "message", "role": "assistant", "model": data.get("model") or "",
            "content": content, "stop_reason": stop, "stop_sequence": None, "usage": anthropic_usage(usage)}


class MessagesStream:
    """Anthropic events from a stream of OpenAI chunks (`inner` yields StreamEvents with `chunk`)."""

    def __init__(self, inner: StreamDecoder, model: str, prompt_estimate: int) -> None:
        self.inner = inner
        self.model = model
        self.prompt_estimate = prompt_estimate
        self.started = False
        self.block: tuple[str, int] | None = None  # (kind, OpenAI tool index or -1) of the open block
        self.blocks = 0  # content blocks opened so far
        self.tools: dict[int, int] = {}  # OpenAI tool call index → content block index
        self.stop_reason: str | None = None
        self.usage: Usage | None = None

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
        if event.chunk is not None:
            self._start(frames, event.chunk.get("id"), event.chunk.get("model"))
            for choice in event.chunk.get("choices") or ():
                if choice.get("index", 0) == 0:
                    self._choice(frames, choice)
        if event.usage is not None:
            self.usage = event.usage
        if event.done:
            self._start(frames, None, None)
            self._close(frames)
            usage = anthropic_usage(self.usage)
            frames.append(named_sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": self.stop_reason or "end_turn",
                                                                                      "stop_sequence": None}, "usage": usage}))
            frames.append(named_sse("message_stop", {"type": "message_stop"}))
        return StreamEvent(raw=b"".join(frames) or None, usage=event.usage, output_tokens=event.output_tokens, done=event.done)

    def _start(self, frames: list[bytes], chunk_id: object, model: str | None) -> None:
        if self.started:
            return
        self.started = True
        message: dict[str, Any] = {"id": message_id(chunk_id), "type": "message", "role": "assistant", "model": model or self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.prompt_estimate, "output_tokens": 0}}
        frames.append(named_sse("message_start", {"type": "message_start", "message": message}))

    def _open(self, frames: list[bytes], kind: str, tool: int, block: dict[str, Any]) -> None:
        self._close(frames)
        frames.append(named_sse("content_block_start", {"type": "content_block_start", "index": self.blocks, "content_block": block}))
        self.block = (kind, tool)
        self.blocks += 1

    def _close(self, frames: list[bytes]) -> None:
        if self.block is not None:
            frames.append(named_sse("content_block_stop", {"type": "content_block_stop", "index": self.blocks - 1}))
            self.block = None

    def _delta(self, frames: list[bytes], index: int, delta: dict[str, Any]) -> None:
        frames.append(named_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))

    def _choice(self, frames: list[bytes], choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            if self.block != ("thinking", -1):
                self._open(frames, "thinking", -1, {"type": "thinking", "thinking": "", "signature": ""})
            self._delta(frames, self.blocks - 1, {"type": "thinking_delta", "thinking": reasoning})
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self.block != ("text", -1):
                self._open(frames, "text", -1, {"type": "text", "text": ""})
            self._delta(frames, self.blocks - 1, {"type": "text_delta", "text": content})
        for call in delta.get("tool_calls") or ():
            self._tool_call(frames, call)
        if choice.get("finish_reason"):
            self.stop_reason = FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
            if self.stop_reason == "end_turn" and self.tools:
                self.stop_reason = "tool_use"
            self._close(frames)

    def _tool_call(self, frames: list[bytes], call: dict[str, Any]) -> None:
        position = call.get("index", 0)
        fn = call.get("function") or {}
        if position not in self.tools:
            self._open(frames, "tool", position, {"type": "tool_use", "id": call.get("id") or new_id("toolu_"),
                                                  "name": fn.get("name") or "", "input": {}})
            self.tools[position] = self.blocks - 1
        if fn.get("arguments"):
            self._delta(frames, self.tools[position], {"type": "input_json_delta", "partial_json": fn["arguments"]})
