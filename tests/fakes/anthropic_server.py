"""A fake Anthropic upstream: /v1/messages (JSON and the SSE event sequence), count_tokens, models.

It checks requests the way the real API does where conversions can go wrong (max_tokens required,
roles, no empty text blocks, tool results answering the previous turn's tool_use ids, id charset,
temperature ≤ 1), so a bad conversion fails loudly. Scripted with `AnthropicReply`s, like the
OpenAI fake.
"""
from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field

from tests.fakes.http import FakeServer, Handler

TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


@dataclass
class AnthropicReply:
    status: int = 200
    text: str = "Hello from the fake upstream."
    thinking: str | None = None
    tool_calls: list = field(default_factory=list)  # [{"name": ..., "input": {...}}]
    stop_reason: str | None = None  # default: tool_use with tools, else end_turn
    input_tokens: int = 20
    cache_read: int = 0
    cache_write: int = 0
    output_tokens: int | None = None  # default: one per text piece and tool call, plus thinking
    thinking_tokens: int = 0
    error: dict | None = None
    headers: dict = field(default_factory=dict)
    reset_after_events: int | None = None
    error_event_after: int | None = None  # stream: send an overloaded `error` event after this many events

    def pieces(self) -> list[str]:
        words = self.text.split(" ") if self.text else []
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def output(self) -> int:
        if self.output_tokens is not None:
            return self.output_tokens
        return len(self.pieces()) + len(self.tool_calls) + self.thinking_tokens

    def usage(self) -> dict:
        usage = {"input_tokens": self.input_tokens, "cache_creation_input_tokens": self.cache_write,
                 "cache_read_input_tokens": self.cache_read, "output_tokens": self.output()}
        if self.thinking_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": self.thinking_tokens}
        return usage

    def blocks(self) -> list[dict]:
        blocks = []
        if self.thinking:
            blocks.append({"type": "thinking", "thinking": self.thinking, "signature": "sig-fake"})
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        for i, call in enumerate(self.tool_calls):
            blocks.append({"type": "tool_use", "id": f"toolu_fake{i}", "name": call["name"], "input": call["input"]})
        return blocks

    def stop(self) -> str:
        return self.stop_reason or ("tool_use" if self.tool_calls else "end_turn")


def check_request(body) -> str | None:
    """What the real API would refuse in this request, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if isinstance(body.get("temperature"), (int, float)) and not 0 <= body["temperature"] <= 1:
        return "temperature: Input should be less than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    previous_tool_ids: set[str] = set()
    for n, message in enumerate(messages):
        # `system` turns inside messages: the API takes them (Claude Code 2.1 sends its reminders so)
        if message.get("role") not in ("user", "assistant", "system"):
            return f"messages.{n}.role: Input should be 'user', 'assistant' or 'system'"
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not blocks:
            return f"messages.{n}: all messages must have non-empty content"
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{n}: text content blocks must be non-empty"
            if block.get("type") == "tool_use" and not TOOL_ID.match(block.get("id", "")):
                return f"messages.{n}: tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in previous_tool_ids:
                return f"messages.{n}: unexpected `tool_use_id` found in `tool_result` blocks: {block.get('tool_use_id')}"
        previous_tool_ids = {b["id"] for b in blocks if b.get("type") == "tool_use"}
    return None


class AnthropicHandler(Handler):
    def do_GET(self):
        if self.path.split("?")[0].rstrip("/").endswith("/v1/models"):
            self.fake.record(path=self.path, headers=dict(self.headers), body=None)
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in self.fake.models]
            self.send_json(200, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})
            return
        self.error(404, "not_found_error", "Not found")

    def error(self, status: int, kind: str, message: str, headers: dict | None = None):
        self.send_json(status, {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}, headers)

    def do_POST(self):
        body = self.read_json()
        self.fake.record(path=self.path, headers=dict(self.headers), body=body)
        reply = self.fake.next_reply()
        if not self.headers.get("x-api-key"):
            return self.error(401, "authentication_error", "x-api-key header is required")
        if not self.headers.get("anthropic-version"):
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        path = self.path.split("?")[0]
        if path.endswith("/v1/messages/count_tokens"):
            return self.send_json(200, {"input_tokens": len(json.dumps(body.get("messages"))) // 4})
        if not path.endswith("/v1/messages"):
            return self.error(404, "not_found_error", "Not found")
        if reply.status != 200:
            error = reply.error or {"type": "error", "error": {"type": "api_error", "message": f"fake failure {reply.status}"}}
            return self.send_json(reply.status, error, reply.headers)
        problem = check_request(body)
        if problem:
            return self.error(400, "invalid_request_error", problem)
        if body.get("stream"):
            return self.stream(reply, body["model"])
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": reply.blocks(),
                   "stop_reason": reply.stop(), "stop_sequence": None, "usage": reply.usage()}
        self.send_json(200, message, reply.headers)

    def events(self, r: AnthropicReply, model: str) -> list[bytes]:
        def event(name, data):
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        start_usage = dict(r.usage(), output_tokens=1)
        start_usage.pop("output_tokens_details", None)
        out = [event("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": start_usage}}),
            event("ping", {"type": "ping"})]
        index = 0

        def block(start, deltas):
            nonlocal index
            out.append(event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
            out.extend(event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas)
            out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1

        if r.thinking:
            block({"type": "thinking", "thinking": "", "signature": ""},
                  [{"type": "thinking_delta", "thinking": r.thinking}, {"type": "signature_delta", "signature": "sig-fake"}])
        if r.text:
            block({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in r.pieces()])
        for i, call in enumerate(r.tool_calls):
            args = json.dumps(call["input"])
            half = len(args) // 2
            block({"type": "tool_use", "id": f"toolu_fake{i}", "name": call["name"], "input": {}},
                  [{"type": "input_json_delta", "partial_json": ""}, {"type": "input_json_delta", "partial_json": args[:half]},
                   {"type": "input_json_delta", "partial_json": args[half:]}])
        out.append(event("message_delta", {"type": "message_delta", "delta": {"stop_reason": r.stop(), "stop_sequence": None},
                                           "usage": r.usage()}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out

    def stream(self, r: AnthropicReply, model: str):
        events = self.events(r, model)
        if r.error_event_after is not None:
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            events = events[: r.error_event_after] + [f"event: error\ndata: {json.dumps(error)}\n\n".encode()]
        self.start_stream(r.headers)
        for n, data in enumerate(events):
            if r.reset_after_events is not None and n >= r.reset_after_events:
                self.reset()
                return
            try:
                self.send_chunk(data)
            except (BrokenPipeError, ConnectionResetError):
                return
        self.end_stream()


class FakeAnthropic(FakeServer):
    handler_class = AnthropicHandler

    def __init__(self, models: list[str] | None = None):
        super().__init__()
        self.default = AnthropicReply()
        self.queue: deque[AnthropicReply] = deque()
        self.models = models or ["claude-sonnet-4-5", "claude-haiku-4-5"]

    @property
    def url(self) -> str:
        return self.origin

    def push(self, *replies: AnthropicReply) -> None:
        with self.lock:
            self.queue.extend(replies)

    def next_reply(self) -> AnthropicReply:
        with self.lock:
            return self.queue.popleft() if self.queue else self.default

    def message_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].split("?")[0].endswith("/v1/messages")]

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()
            self.queue.clear()
        self.default = AnthropicReply()
