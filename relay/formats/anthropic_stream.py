"""Anthropic Messages streams: passed through to Anthropic callers, or turned into OpenAI chunks.

An Anthropic stream is message_start, then per content block content_block_start / _delta… /
_stop, then message_delta (stop reason, cumulative usage) and message_stop, with pings anywhere.
"""
from __future__ import annotations

from typing import Any


import orjson

from relay.errors import ErrorKind, UpstreamError
from relay.formats.anthropic_wire import STOP_TO_FINISH, stream_error, usage_from_anthropic
from relay.formats.common import DONE, ChunkMaker, new_id, sse
from relay.sse import NOT_SSE, EventDecoder, StreamEvent, event_data, is_sse
from relay.tokens import text_tokens

MALFORMED = UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "malformed stream event")
PREAMBLE = ("message_start", "ping")


def _delta_text(delta: dict[str, Any]) -> str:
    return delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""


class AnthropicEvents(EventDecoder):
    """Splits and decodes the upstream's SSE; subclasses say what each event becomes.

    What comes before the first content block (message_start, pings) is held back and sent with
    it: Anthropic often reports overload right after message_start, and until something has
    reached the caller that failure can still be retried elsewhere, and is not billed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.usage_fields: dict[str, Any] = {}
        self.opened = False  # the first content has been let through
        self.held = b""

    def _decode(self, event: bytes) -> StreamEvent:
        data = event_data(event)
        if data is None:
            if not is_sse(event):
                return StreamEvent(raw=None, error=UpstreamError(ErrorKind.INVALID_RESPONSE, 200, NOT_SSE))
            return self.comment(event)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return StreamEvent(raw=None, error=MALFORMED)
        if not isinstance(obj, dict):
            return StreamEvent(raw=None, error=MALFORMED)
        kind = obj.get("type")
        if kind == "error":
            return StreamEvent(raw=None, error=stream_error(obj))
        if kind == "message_start":
            self.usage_fields = dict((obj.get("message") or {}).get("usage") or {})
        elif kind == "message_delta":
            # message_delta usage is cumulative; fields it omits keep their message_start value.
            self.usage_fields.update({k: v for k, v in (obj.get("usage") or {}).items() if v is not None})
        out = self.convert(event, kind, obj)
        if not self.opened and kind in PREAMBLE:
            self.held += out.raw or b""
            out.raw = None
        else:
            self.opened = True
            if self.held and out.raw:
                out.raw, self.held = self.held + out.raw, b""
        return out

    def comment(self, event: bytes) -> StreamEvent:
        return StreamEvent(raw=None)

    def convert(self, event: bytes, kind: object, obj: dict[str, Any]) -> StreamEvent:
        raise NotImplementedError


class AnthropicNativeStream(AnthropicEvents):
    """For Anthropic-format callers: every event passes through as it came; usage is read on the way."""

    def comment(self, event: bytes) -> StreamEvent:
        return StreamEvent(raw=event + b"\n\n")

    def convert(self, event: bytes, kind: object, obj: dict[str, Any]) -> StreamEvent:
        out = StreamEvent(raw=event + b"\n\n")
        if kind == "content_block_delta":
            out.output_tokens = text_tokens(_delta_text(obj.get("delta") or {}))
        elif kind == "message_delta":
            out.usage = usage_from_anthropic(self.usage_fields)
        elif kind == "message_stop":
            out.done = True
        return out


class AnthropicChatStream(AnthropicEvents):
    """For OpenAI-format callers: each event becomes a chat.completion.chunk (or nothing)."""

    def __init__(self, wants_usage: bool) -> None:
        super().__init__()
        self.wants_usage = wants_usage
        self.maker = ChunkMaker(new_id("msg_"), "")
        self.tool_index: dict[int, int] = {}  # content block index → OpenAI tool call index

    def _emit(self, chunk: dict[str, Any], tokens: int = 0) -> StreamEvent:
        return StreamEvent(raw=sse(chunk), chunk=chunk, output_tokens=tokens)

    def convert(self, event: bytes, kind: object, obj: dict[str, Any]) -> StreamEvent:
        if kind == "message_start":
            message = obj.get("message") or {}
            self.maker = ChunkMaker(message.get("id") or self.maker.id, message.get("model") or "")
            return self._emit(self.maker.chunk({"role": "assistant", "content": "", "refusal": None}))
        if kind == "content_block_start":
            return self._block_start(obj.get("index", 0), obj.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(obj.get("index", 0), obj.get("delta") or {})
        if kind == "message_delta":
            reason = (obj.get("delta") or {}).get("stop_reason")
            out = self._emit(self.maker.chunk({}, STOP_TO_FINISH.get(reason, "stop")))
            out.usage = usage_from_anthropic(self.usage_fields)
            return out
        if kind == "message_stop":
            raw = b""
            usage = usage_from_anthropic(self.usage_fields)
            if self.wants_usage and usage is not None:
                raw += sse(self.maker.usage_chunk(usage))
            return StreamEvent(raw=raw + DONE, usage=usage, done=True)
        return StreamEvent(raw=None)  # ping, content_block_stop, and event types added later

    def _block_start(self, index: int, block: dict[str, Any]) -> StreamEvent:
        if block.get("type") == "tool_use":
            position = self.tool_index.setdefault(index, len(self.tool_index))
            call = {"index": position, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": ""}}
            return self._emit(self.maker.chunk({"tool_calls": [call]}), text_tokens(block.get("name") or ""))
        if block.get("type") == "text" and block.get("text"):
            return self._emit(self.maker.chunk({"content": block["text"]}), text_tokens(block["text"]))
        return StreamEvent(raw=None)

    def _delta(self, index: int, delta: dict[str, Any]) -> StreamEvent:
        kind = delta.get("type")
        if kind == "text_delta":
            return self._emit(self.maker.chunk({"content": delta.get("text") or ""}), text_tokens(delta.get("text") or ""))
        if kind == "thinking_delta":
            thought = delta.get("thinking") or ""
            return self._emit(self.maker.chunk({"reasoning_content": thought}), text_tokens(thought))
        if kind == "input_json_delta" and delta.get("partial_json") and index in self.tool_index:
            call = {"index": self.tool_index[index], "function": {"arguments": delta["partial_json"]}}
            return self._emit(self.maker.chunk({"tool_calls": [call]}), text_tokens(delta["partial_json"]))
        return StreamEvent(raw=None)  # signature deltas, citations: nothing OpenAI can carry
