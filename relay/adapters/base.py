"""The one small interface every provider adapter implements, and the types that cross it.

An adapter turns a request in the gateway's canonical form (OpenAI format) into the upstream's HTTP
request, reads the upstream's answer back into OpenAI format plus normalised usage, and says what
kind of failure an upstream error is. It never does I/O itself: the pipeline sends and receives.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.errors import UpstreamError
from relay.pricing import Usage
from relay.settings import Timeouts
from relay.snapshot import ChannelKeyView, ChannelView
from relay.sse import StreamDecoder, StreamEvent  # part of the adapter interface
from relay.upstream import HttpRequest


class Operation(str, enum.Enum):
    """What an adapter can do; the router answers 501 for an operation a channel type lacks."""

    CHAT = "chat"  # /v1/chat/completions
    MESSAGES = "messages"  # /v1/messages (Anthropic format; natively or converted through CHAT)
    COUNT_TOKENS = "count_tokens"  # /v1/messages/count_tokens and Gemini's :countTokens
    GENERATE_CONTENT = "generate_content"  # Gemini's :generateContent / :streamGenerateContent (natively or through CHAT)
    COMPLETIONS = "completions"  # /v1/completions (legacy)
    EMBEDDINGS = "embeddings"
    IMAGES = "images"  # /v1/images/generations
    SPEECH = "speech"  # /v1/audio/speech
    TRANSCRIPTION = "transcription"  # /v1/audio/transcriptions and /v1/audio/translations
    MODERATIONS = "moderations"
    RESPONSES = "responses"  # /v1/responses
    MODELS = "models"  # listing upstream models (operator's "fetch models")


DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


@dataclass(slots=True)
class ChatRequest:
    """A chat completion request in OpenAI format, as the caller sent it."""

    model: str
    payload: dict[str, Any]  # the caller's JSON body; unknown fields pass through to OpenAI-type upstreams
    stream: bool = False
    wants_usage: bool = False  # the caller asked for stream_options.include_usage
    max_tokens: int | None = None
    # Another converter consumes the decoded chunks (an Anthropic-format caller): stream decoders
    # need not encode OpenAI bytes for the caller.
    chunks_only: bool = False


@dataclass(slots=True)
class MessagesRequest:
    """A /v1/messages (or count_tokens) request in Anthropic format, as the caller sent it."""

    model: str
    payload: dict[str, Any]
    stream: bool = False
    max_tokens: int | None = None
    version: str = DEFAULT_ANTHROPIC_VERSION  # the caller's anthropic-version, forwarded
    beta: str | None = None  # the caller's anthropic-beta, forwarded to Anthropic upstreams


@dataclass(slots=True)
class GenerateRequest:
    """A Gemini-format request (:generateContent, :streamGenerateContent or :countTokens) as the
    caller sent it; the model comes from the URL."""

    model: str
    payload: dict[str, Any]
    body: bytes  # the body as received: native channels get it unchanged
    stream: bool = False
    sse: bool = True  # streamed as SSE (alt=sse), else as one JSON array as Google does without it
    max_tokens: int | None = None  # generationConfig.maxOutputTokens
    candidates: int = 1  # generationConfig.candidateCount


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt goes: a channel, one of its keys, the model name the upstream knows, and
    the attempt's time limits (the channel's own, cut to what is left of the request's deadline)."""

    channel: ChannelView
    key: ChannelKeyView
    upstream_model: str
    timeouts: Timeouts = Timeouts()


@dataclass(slots=True)
class ChatResult:
    body: bytes  # OpenAI-format response body for the caller
    usage: Usage | None  # None when the upstream reported none
    output_text_tokens: int = 0  # local count of the visible output, for when usage is None


@dataclass(frozen=True)
class AdapterInfo:
    type: str
    label: str
    capabilities: frozenset[Operation] = field(default_factory=frozenset)
    # Speaks Anthropic's Messages API itself: /v1/messages passes through without conversion.
    messages_native: bool = False
    # Speaks Gemini's generateContent itself: the Gemini endpoints pass through without conversion.
    generate_native: bool = False


class Adapter(Protocol):
    """Every adapter has these. Operation-specific methods exist where the capability is declared:
    `forward_request` (OpenAI-shaped endpoints), `messages_*` and `count_tokens_request` (native
    Anthropic), `generate_*` (native Gemini)."""

    info: AdapterInfo

    def chat_request(self, target: Target, request: ChatRequest) -> HttpRequest: ...

    def chat_response(self, target: Target, request: ChatRequest, body: bytes) -> ChatResult: ...

    def chat_stream(self, target: Target, request: ChatRequest) -> StreamDecoder: ...

    def classify_error(self, status: int, body: bytes, headers: Mapping[str, Any]) -> UpstreamError: ...

    def models_request(self, channel: ChannelView, key: ChannelKeyView) -> HttpRequest: ...

    def models_response(self, body: bytes) -> list[str]: ...


class ForwardingAdapter(Adapter, Protocol):
    """OpenAI-shaped providers: an OpenAI endpoint's body goes up as it came."""

    def forward_request(self, target: Target, operation: Operation, body: bytes, content_type: str = "application/json",
                        path: str | None = None) -> HttpRequest: ...


class MessagesAdapter(Adapter, Protocol):
    """Adapters with `info.messages_native`."""

    def messages_request(self, target: Target, request: MessagesRequest) -> HttpRequest: ...

    def messages_response(self, target: Target, request: MessagesRequest, body: bytes) -> ChatResult: ...

    def messages_stream(self, target: Target, request: MessagesRequest) -> StreamDecoder: ...

    def count_tokens_request(self, target: Target, request: MessagesRequest) -> HttpRequest: ...


class GenerateAdapter(Adapter, Protocol):
    """Adapters with `info.generate_native`."""

    def generate_request(self, target: Target, request: GenerateRequest) -> HttpRequest: ...

    def generate_response(self, target: Target, request: GenerateRequest, body: bytes) -> ChatResult: ...

    def generate_stream(self, target: Target, request: GenerateRequest) -> StreamDecoder: ...

    def generate_count_request(self, target: Target, request: GenerateRequest) -> HttpRequest: ...


__all__ = ["DEFAULT_ANTHROPIC_VERSION", "Adapter", "AdapterInfo", "ChatRequest", "ChatResult", "ForwardingAdapter", "GenerateAdapter", "GenerateRequest",
           "MessagesAdapter", "MessagesRequest", "Operation",
           "StreamDecoder", "StreamEvent", "Target"]
