"""The conformance matrix's world: one fake upstream per channel type, the replies each scenario
scripts on them, and the usage each reply must normalise to.

Every channel type is scripted to report usage that normalises to the same five counts (Anthropic
adds cache writes), so one price gives a known, exact charge per request.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from relay.pricing import Usage
from tests.fakes.anthropic_server import AnthropicReply, FakeAnthropic
from tests.fakes.azure_server import FakeAzure
from tests.fakes.gemini_server import FakeGemini, GeminiReply
from tests.fakes.openai_server import Behaviour, FakeOpenAI

CHANNELS = ("openai", "azure", "anthropic", "gemini")
UPSTREAM_MODEL = {"openai": "gpt-4o-mini", "azure": "prod-4o-deployment", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
PUBLIC_MODEL = {c: f"conf-{c}" for c in CHANNELS}
TEXT = "Hello from the fake upstream."
WEATHER = {"city": "Zürich", "unit": "c"}
TIME = {"zone": "Europe/Zurich"}

# USD per 1M tokens: input, output, cache read, cache write (reasoning bills as output)
PRICE = ("3", "15", "0.3", "3.75")


def charge(usage: Usage) -> int:
    """µ$ for `usage` at PRICE, rounded half up once."""
    total = (usage.input * 3_000_000 + usage.cache_read * 300_000 + usage.cache_write * 3_750_000
             + (usage.output + usage.reasoning) * 15_000_000)
    return (2 * total + 1_000_000) // 2_000_000


@dataclass
class Fakes:
    openai: FakeOpenAI
    azure: FakeAzure
    anthropic: FakeAnthropic
    gemini: FakeGemini

    def of(self, channel: str):
        return getattr(self, channel)

    def reset(self) -> None:
        for channel in CHANNELS:
            self.of(channel).reset_log()
        self.azure.azure_requests.clear()

    def close(self) -> None:
        for channel in CHANNELS:
            self.of(channel).close()


def expected_usage(channel: str) -> Usage:
    return Usage(input=1000, cache_read=200, cache_write=50 if channel == "anthropic" else 0, output=200, reasoning=100)


def reply(channel: str, *, text: str = TEXT, calls: list[tuple[str, dict]] = (), stop: str | None = None):
    """A reply with the scenario's content and the standard usage, in the channel's own terms.
    `stop` is the OpenAI finish reason the reply must end with (translated per provider)."""
    if channel in ("openai", "azure"):
        return Behaviour(content=text, tool_calls=[{"name": n, "arguments": json.dumps(a)} for n, a in calls] or None,
                         finish_reason=stop, prompt_tokens=1200, cached_tokens=200, completion_tokens=300, reasoning_tokens=100)
    if channel == "anthropic":
        native = {None: None, "length": "max_tokens", "content_filter": "refusal"}[stop]
        return AnthropicReply(text=text, tool_calls=[{"name": n, "input": a} for n, a in calls], stop_reason=native,
                              input_tokens=1000, cache_read=200, cache_write=50, output_tokens=300, thinking_tokens=100)
    native = {None: "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}[stop]
    return GeminiReply(text=text, function_calls=[{"name": n, "args": a} for n, a in calls], finish_reason=native,
                       prompt_tokens=1200, cached_tokens=200, candidates_tokens=200, thoughts_tokens=100)


def upstream_requests(fakes: Fakes, channel: str) -> list[dict]:
    """The chat requests the channel's fake received, in its own wire format."""
    fake = fakes.of(channel)
    if channel == "anthropic":
        return [r["body"] for r in fake.message_requests()]
    if channel == "gemini":
        return [r["body"] for r in fake.generate_requests()]
    return [r["body"] for r in fake.chat_requests()]


# A 1×1 PNG, as clients send images inline.
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def sent_image(channel: str, body: dict) -> bool:
    """Whether the upstream request carries the inline PNG in the provider's own image form."""
    if channel == "anthropic":
        return any(b.get("type") == "image" and b["source"] == {"type": "base64", "media_type": "image/png", "data": PIXEL}
                   for m in body["messages"] for b in m["content"] if isinstance(m["content"], list))
    if channel == "gemini":
        return any(p.get("inlineData") == {"mimeType": "image/png", "data": PIXEL} for c in body["contents"] for p in c["parts"])
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" and p["image_url"]["url"] == f"data:image/png;base64,{PIXEL}"
                                                         for p in m["content"]) for m in body["messages"])
