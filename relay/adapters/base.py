"""The one small interface every provider adapter implements, and the types that cross it.

An adapter turns a request in the gateway's canonical form (OpenAI format) into the upstream's HTTP
request, reads the upstream's answer back into OpenAI format plus normalised usage, and says what
kind of failure an upstream error is. It never does I/O itself: the pipeline sends and receives.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from relay.errors import UpstreamError
from relay.pricing import Usage
from relay.snapshot import ChannelKeyView, ChannelView
from relay.upstream import HttpRequest


class Operation(str, enum.Enum):
    CHAT = "chat"  # /v1/chat/completions
    MODELS = "models"  # listing upstream models (operator's "fetch models")


@dataclass(slots=True)
class ChatRequest:
    """A chat completion request in OpenAI format, as the caller sent it."""

    model: str
    payload: dict  # the caller's JSON body; unknown fields pass through to OpenAI-type upstreams
    stream: bool = False
    wants_usage: bool = False  # the caller asked for stream_options.include_usage
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt goes: a channel, one of its keys, and the model name the upstream knows."""

    channel: ChannelView
    key: ChannelKeyView
    upstream_model: str


@dataclass(slots=True)
class ChatResult:
    body: bytes  # OpenAI-format response body for the caller
    usage: Usage | None  # None when the upstream reported none
    output_text_tokens: int = 0  # local count of the visible output, for when usage is None


@dataclass(slots=True)
class StreamEvent:
    """One SSE event from the upstream, decoded.

    `raw` is what goes to an OpenAI-format caller (None: send nothing); `chunk` is the decoded
    chat.completion.chunk for whoever needs to look inside (never re-encoded unless changed).
    """

    raw: bytes | None
    chunk: dict | None = None
    usage: Usage | None = None
    output_tokens: int = 0  # local count of the text this event delivers
    done: bool = False
    error: UpstreamError | None = None


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> Iterator[StreamEvent]: ...

    def finish(self) -> Iterator[StreamEvent]: ...


@dataclass(frozen=True)
class AdapterInfo:
    type: str
    label: str
    capabilities: frozenset[Operation] = field(default_factory=frozenset)


class Adapter(Protocol):
    info: AdapterInfo

    def chat_request(self, target: Target, request: ChatRequest) -> HttpRequest: ...

    def chat_response(self, target: Target, request: ChatRequest, body: bytes) -> ChatResult: ...

    def chat_stream(self, target: Target, request: ChatRequest) -> StreamDecoder: ...

    def classify_error(self, status: int, body: bytes, headers) -> UpstreamError: ...

    def models_request(self, channel: ChannelView, key: ChannelKeyView) -> HttpRequest: ...

    def models_response(self, body: bytes) -> list[str]: ...
