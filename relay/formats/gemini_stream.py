"""Gemini streamGenerateContent (alt=sse) → OpenAI chat.completion.chunk events, or passed through
to Gemini-format callers (`GeminiNativeStream`).

Each SSE event is a whole GenerateContentResponse holding the next parts of each candidate; the
one carrying finishReason also carries the final usageMetadata. There is no [DONE]: the relay
adds it after the finishing event, so a stream cut before that is recognised as cut.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from relay.errors import ErrorKind, UpstreamError
from relay.formats.common import DONE, ChunkMaker, new_id, sse
from relay.formats.gemini_wire import classify_error_body, finish_reason, tool_call, usage_from_gemini
from relay.sse import NOT_SSE, EventDecoder, StreamEvent, event_data, is_sse
from relay.tokens import text_tokens

if TYPE_CHECKING:
    from relay.formats.generate_response import Framing

MALFORMED = UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "malformed stream event")


class GeminiChatStream(EventDecoder):
    def __init__(self, model: str, wants_usage: bool, chunks_only: bool = False):
        super().__init__()
        self.model = model
        self.wants_usage = wants_usage
        self.chunks_only = chunks_only
        self.maker: ChunkMaker | None = None
        self.calls: dict[int, int] = {}  # candidate index → tool calls sent so far
        self.open: set[int] = set()  # candidates seen and not finished

    def _decode(self, event: bytes) -> StreamEvent:
        data = event_data(event)
        if data is None:
            return StreamEvent(raw=None, error=None if is_sse(event) else UpstreamError(ErrorKind.INVALID_RESPONSE, 200, NOT_SSE))
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return StreamEvent(raw=None, error=MALFORMED)
        if not isinstance(obj, dict):
            return StreamEvent(raw=None, error=MALFORMED)
        if "error" in obj:
            return StreamEvent(raw=None, error=classify_error_body(200, obj))
        first = self.maker is None
        if first:
            self.maker = ChunkMaker(obj.get("responseId") or new_id("chatcmpl-"), obj.get("modelVersion") or self.model)
        choices, tokens = [], 0
        for candidate in obj.get("candidates") or ():
            choice, count = self._choice(candidate, first)
            choices.append(choice)
            tokens += count
        blocked = not obj.get("candidates") and (obj.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            delta = {"role": "assistant", "content": ""} if first else {}
            choices.append({"index": 0, "delta": delta, "logprobs": None, "finish_reason": "content_filter"})
        done = bool(blocked) or (bool(choices) and not self.open)
        return self._event(choices, tokens, done, obj.get("usageMetadata"))

    def _choice(self, candidate: dict[str, Any], first: bool) -> tuple[dict[str, Any], int]:
        index = int(candidate.get("index") or 0)
        self.open.add(index)
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (candidate.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                position = self.calls.get(index, 0)
                calls.append(tool_call(part, position))
                self.calls[index] = position + 1
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") else texts).append(part["text"])
        if texts or first:
            delta["content"] = "".join(texts)
        if thoughts:
            delta["reasoning_content"] = "".join(thoughts)
        if calls:
            delta["tool_calls"] = calls
        reason = finish_reason(candidate, bool(self.calls.get(index)))
        if reason:
            self.open.discard(index)
        tokens = sum(text_tokens(t) for t in (*texts, *thoughts)) + sum(text_tokens(c["function"]["arguments"]) for c in calls)
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}, tokens

    def _event(self, choices: list[dict[str, Any]], tokens: int, done: bool, meta: Any) -> StreamEvent:
        # _decode sets self.maker before it builds any event
        chunk = dict(self.maker.chunk({}), choices=choices) if choices else None  # type: ignore[union-attr]  # set by _decode
        out = StreamEvent(raw=None, chunk=chunk, output_tokens=tokens, done=done)
        raw = sse(chunk) if chunk is not None and not self.chunks_only else b""
        if done:
            # Usage counts only once the stream finished: a cut stream must not look complete.
            out.usage = usage_from_gemini(meta)
            if not self.chunks_only:
                if self.wants_usage and out.usage is not None:
                    raw += sse(self.maker.usage_chunk(out.usage))  # type: ignore[union-attr]  # set by _decode
                raw += DONE
        out.raw = raw or None
        return out


def parts_tokens(candidates: Any) -> int:
    """Output tokens counted locally in candidates' parts (text, thoughts, function calls)."""
    total = 0
    for candidate in candidates or ():
        for part in (candidate.get("content") or {}).get("parts") or () if isinstance(candidate, dict) else ():
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                total += text_tokens(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                total += text_tokens(orjson.dumps(part["functionCall"]).decode())
    return total


class GeminiNativeStream(EventDecoder):
    """For Gemini-format callers of Gemini channels: every event passes through as it came
    (re-framed as JSON array elements when the caller streams without alt=sse); usage is read on
    the way and counts once every candidate has finished, as a cut stream must not look complete."""

    def __init__(self, framing: Framing) -> None:
        super().__init__()
        self.framing = framing
        self.open: set[int] = set()  # candidates seen and not finished
        self.finished = False

    def _decode(self, event: bytes) -> StreamEvent:
        data = event_data(event)
        if data is None:
            return StreamEvent(raw=None)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return StreamEvent(raw=None, error=MALFORMED)
        if not isinstance(obj, dict):
            return StreamEvent(raw=None, error=MALFORMED)
        if "error" in obj:
            return StreamEvent(raw=None, error=classify_error_body(200, obj))
        candidates = obj.get("candidates") or ()
        for candidate in candidates:
            index = int(candidate.get("index") or 0) if isinstance(candidate, dict) else 0
            self.open.add(index)
            if isinstance(candidate, dict) and candidate.get("finishReason"):
                self.open.discard(index)
        blocked = not candidates and (obj.get("promptFeedback") or {}).get("blockReason")
        if (candidates and not self.open) or blocked:
            self.finished = True
        out = StreamEvent(raw=self.framing.frame(data), output_tokens=parts_tokens(candidates), done=self.finished)
        if self.finished:
            out.usage = usage_from_gemini(obj.get("usageMetadata"))
        return out

    def finish(self) -> Iterator[StreamEvent]:
        yield from super().finish()
        if self.finished:  # a cut stream is closed by the error event that reports it
            tail = self.framing.close()
            if tail:
                yield StreamEvent(raw=tail, done=True)
