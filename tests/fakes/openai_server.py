"""A fake OpenAI-compatible upstream: /v1/chat/completions (JSON and SSE), /v1/embeddings and
/v1/models.

With a `PromptCache` (tests/fakes/prompt_cache.py) chat usage counts the prompt and reports the part
the same upstream key saw before as cached. Scripted: push `Behaviour`s and each request takes the next one (or the default); a key listed in
`by_key` always gets its own behaviour (a dead key, a rate-limited key). Faults: any status code with
any error body and headers (429 + Retry-After), a delay before the response (`first_byte_delay`) or
after the headers before the first event (`stream_pause`), a slow drip (`chunk_gap`), a reset after N
chunks, malformed JSON, missing usage, no [DONE]. Usage fields and chunk shapes follow the real API,
including `stream_options.include_usage`.
"""
from __future__ import annotations

import json
import ssl
import time
from collections import deque
from dataclasses import dataclass, field, replace

from tests.fakes import openai_endpoints
from tests.fakes.http import FakeServer, Handler
from tests.fakes.prompt_cache import PromptCache


@dataclass
class Behaviour:
    status: int = 200
    content: str = "Hello from the fake upstream."
    prompt_tokens: int = 12
    completion_tokens: int | None = None  # default: one per streamed piece / word
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    send_usage: bool = True
    chunk_gap: float = 0.0
    first_byte_delay: float = 0.0
    reset_after_chunks: int | None = None  # stream: drop the connection after this many chunks
    malformed: bool = False
    error: dict | None = None  # error body for a non-200 status
    headers: dict = field(default_factory=dict)
    tool_calls: list | None = None  # [{"name":..., "arguments":...}]
    finish_reason: str | None = None
    send_done: bool = True
    stream_pause: float = 0.0  # stream: seconds between the headers and the first event
    # Like a real model: at most max_completion_tokens / max_tokens words (one token each) per choice,
    # `n` choices billed; without this the fake writes `content` whatever the request says.
    follow_limit: bool = False
    raw_stream: bytes | None = None  # stream: this body under a 200 text/event-stream, whatever it is
    one_write: bool = False  # stream: every event in one write, as an upstream whose answer was ready

    def limited_by(self, request: dict) -> "Behaviour":
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        choices = request.get("n") or 1
        words = self.pieces()
        cut = words[:limit] if limit else words
        return replace(self, content="".join(cut), completion_tokens=len(cut) * choices, follow_limit=False,
                       finish_reason="length" if len(cut) < len(words) else self.finish_reason)

    def pieces(self) -> list[str]:
        words = self.content.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)] if self.content else []

    def completion(self) -> int:
        if self.completion_tokens is not None:
            return self.completion_tokens
        return len(self.pieces()) + sum(1 for _ in (self.tool_calls or ())) + self.reasoning_tokens

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion(),
            "total_tokens": self.prompt_tokens + self.completion(),
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }


class OpenAIHandler(Handler):
    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self.fake.record(path=self.path, headers=dict(self.headers), body=None)
            models = self.fake.models
            self.send_json(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models]})
            return
        self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        if self.headers.get("Content-Type", "").startswith("multipart/form-data"):  # audio uploads
            return openai_endpoints.transcription(self, self.fake.next_behaviour())
        body = self.read_json()
        self.fake.record(path=self.path, headers=dict(self.headers), body=body)
        self.fake.enter()
        try:
            self.answer(body)
        except (BrokenPipeError, ConnectionResetError):  # the relay gave up on us (a timeout it enforced)
            self.fake.record(path="client-gone", headers={}, body=None)
        finally:
            self.fake.leave()

    def answer(self, body):
        behaviour = self.fake.next_behaviour(self.headers.get("Authorization", "")[len("Bearer "):])
        if behaviour.first_byte_delay:
            time.sleep(behaviour.first_byte_delay)
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self.send_json(401, {"error": {"message": "Missing bearer", "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        if behaviour.status != 200:
            error = behaviour.error or {"error": {"message": f"fake failure {behaviour.status}", "type": "server_error", "code": None}}
            self.send_json(behaviour.status, error, behaviour.headers)
            return
        if not self.path.split("?")[0].endswith("/chat/completions"):
            if openai_endpoints.handle(self, body, behaviour):
                return
            self.send_json(404, {"error": {"message": "unknown path", "type": "invalid_request_error"}})
            return
        model = (body or {}).get("model", "unknown")
        cache = self.fake.prompt_cache
        if cache is not None and isinstance((body or {}).get("messages"), list):
            prompt, cached = cache.usage(self.headers.get("Authorization", "")[len("Bearer "):], body["messages"])
            behaviour = replace(behaviour, prompt_tokens=prompt, cached_tokens=cached)
        if behaviour.follow_limit:
            behaviour = behaviour.limited_by(body or {})
        if (body or {}).get("stream"):
            self.stream(behaviour, model, body)
        else:
            self.complete(behaviour, model)

    def complete(self, b: Behaviour, model: str):
        if b.malformed:
            self.send_json(200, b"{not json")
            return
        message = {"role": "assistant", "content": b.content if not b.tool_calls else None, "refusal": None}
        if b.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function", "function": {"name": t["name"], "arguments": t["arguments"]}}
                for i, t in enumerate(b.tool_calls)
            ]
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": b.finish_reason or ("tool_calls" if b.tool_calls else "stop")}],
        }
        if b.send_usage:
            body["usage"] = b.usage()
        self.send_json(200, body, b.headers)

    def stream(self, b: Behaviour, model: str, request: dict):
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model, "system_fingerprint": "fp_fake"}

        def chunk(delta, finish=None):
            data = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
            if include_usage:
                data["usage"] = None
            return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": piece}) for piece in b.pieces()]
        for i, t in enumerate(b.tool_calls or ()):
            events.append(chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function", "function": {"name": t["name"], "arguments": ""}}]}))
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": t["arguments"]}}]}))
        events.append(chunk({}, b.finish_reason or ("tool_calls" if b.tool_calls else "stop")))
        if include_usage and b.send_usage:
            usage_chunk = dict(base, choices=[], usage=b.usage())
            events.append(b"data: " + json.dumps(usage_chunk, separators=(",", ":")).encode() + b"\n\n")
        if b.send_done:
            events.append(b"data: [DONE]\n\n")
        if b.malformed:
            events.insert(1, b"data: {broken\n\n")

        if b.raw_stream is not None:
            events = [b.raw_stream]
        elif b.one_write:
            events = [b"".join(events)]
        self.start_stream(b.headers)
        if b.stream_pause:
            time.sleep(b.stream_pause)
        for n, event in enumerate(events):
            if b.reset_after_chunks is not None and n >= b.reset_after_chunks:
                self.reset()
                return
            try:
                self.send_chunk(event)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.fake.record(path="client-gone", headers={}, body={"after": n})
                return
            if b.chunk_gap:
                time.sleep(b.chunk_gap)
        self.end_stream()


class FakeOpenAI(FakeServer):
    handler_class = OpenAIHandler

    def __init__(self, models: list[str] | None = None, tls: bool = False, prompt_cache: PromptCache | None = None):
        super().__init__(tls)
        self.prompt_cache = prompt_cache  # usage reports cached input as a provider's prefix cache would
        self.default = Behaviour()
        self.queue: deque[Behaviour] = deque()
        self.by_key: dict[str, Behaviour] = {}
        self.models = models or ["gpt-4o-mini", "gpt-4o"]
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def url(self) -> str:
        return self.origin + "/v1"

    def push(self, *behaviours: Behaviour) -> None:
        with self.lock:
            self.queue.extend(behaviours)

    def next_behaviour(self, key: str = "") -> Behaviour:
        with self.lock:
            if key in self.by_key:
                return self.by_key[key]
            return self.queue.popleft() if self.queue else self.default

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def keys_seen(self) -> list[str]:
        """The upstream key of each chat request, in order."""
        return [r["headers"].get("Authorization", "")[len("Bearer "):] for r in self.chat_requests()]

    def gone(self) -> list[dict]:
        """Streams the caller stopped reading: the relay closed the connection."""
        return [r for r in self.requests if r["path"] == "client-gone"]

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()
            self.queue.clear()
            self.by_key.clear()
            self.max_in_flight = self.in_flight
        self.default = Behaviour()


# Upstream answers the relay must classify, as OpenAI sends them.
def invalid_key() -> Behaviour:
    return Behaviour(status=401, error={"error": {"message": "Incorrect API key provided: sk-dead. You can find your API key at "
                                                          "https://platform.openai.com/account/api-keys.",
                                                  "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})


def out_of_quota() -> Behaviour:
    return Behaviour(status=429, error={"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                                                  "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}})


def rate_limited(retry_after: int) -> Behaviour:
    return Behaviour(status=429, headers={"Retry-After": str(retry_after)},
                     error={"error": {"message": "Rate limit reached for requests", "type": "requests", "param": None,
                                      "code": "rate_limit_exceeded"}})


def bad_request() -> Behaviour:
    return Behaviour(status=400, error={"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error",
                                                  "param": "temperature", "code": None}})
