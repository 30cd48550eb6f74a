"""Schemas of the OpenAI-format request bodies: chat, completions, embeddings, images, speech,
transcriptions (multipart), moderations and responses.

Only what the relay reads, what a conversion walks into, and what must be bounded is declared;
every other field passes through unchecked. Nested shapes are declared where a conversion would
otherwise trip over them (a `function` that is not an object, a content part that is a number).
"""
from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from relay.validation.fields import (
    MAX_EMBEDDING_INPUTS,
    MAX_IMAGES,
    MAX_MESSAGES,
    MAX_TOOLS,
    Choices,
    Identifier,
    LogitBias,
    Metadata,
    ModelName,
    NonEmptyText,
    Object,
    OutputTokens,
    Penalty,
    Role,
    Seed,
    Stop,
    Temperature,
    TopLogprobs,
    UnitInterval,
)


class Body(Struct, kw_only=True):
    """What every OpenAI-format JSON body shares."""

    model: ModelName
    stream: bool | None = None
    user: Identifier | None = None


class StreamOptions(Struct, kw_only=True):
    include_usage: bool | None = None


# --- chat -----------------------------------------------------------------------------------------
class ImageURL(Struct, kw_only=True):
    url: str
    detail: str | None = None


class ContentPart(Struct, kw_only=True):
    type: str
    text: str | None = None
    image_url: str | ImageURL | None = None
    input_audio: Object | None = None
    file: Object | None = None
    refusal: str | None = None


class FunctionCall(Struct, kw_only=True):
    name: str | None = None
    arguments: str | Object | None = None  # JSON text; an object is read as the arguments themselves


class ToolCall(Struct, kw_only=True):
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None  # absent on custom tool calls


class Message(Struct, kw_only=True):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class FunctionDefinition(Struct, kw_only=True):
    name: str | None = None
    description: str | None = None
    parameters: Object | None = None
    strict: bool | None = None


class Tool(Struct, kw_only=True):
    type: str | None = None
    function: FunctionDefinition | None = None  # absent on custom tools


class NamedFunction(Struct, kw_only=True):
    name: str | None = None


class ToolChoice(Struct, kw_only=True):
    type: str | None = None
    function: NamedFunction | None = None


class JsonSchemaFormat(Struct, kw_only=True):
    schema: Object | None = None


class ResponseFormat(Struct, kw_only=True):
    type: str | None = None
    json_schema: JsonSchemaFormat | None = None


class ChatBody(Body, kw_only=True):
    messages: Annotated[list[Message], Meta(min_length=1, max_length=MAX_MESSAGES)]
    stream_options: StreamOptions | None = None
    max_tokens: OutputTokens | None = None
    max_completion_tokens: OutputTokens | None = None
    n: Choices | None = None
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | None = None
    functions: Annotated[list[Object], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    modalities: list[str] | None = None
    audio: Object | None = None
    prediction: Object | None = None
    web_search_options: Object | None = None
    metadata: Metadata | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: Identifier | None = None
    prompt_cache_key: Identifier | None = None


# --- the forwarded endpoints ----------------------------------------------------------------------
TokenIds = list[int]
Prompt = NonEmptyText | Annotated[list[str | int | TokenIds], Meta(min_length=1, max_length=MAX_MESSAGES)]


class CompletionBody(Body, kw_only=True):
    prompt: Prompt
    stream_options: StreamOptions | None = None
    max_tokens: OutputTokens | None = None
    n: Choices | None = None
    best_of: Choices | None = None
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    echo: bool | None = None
    suffix: str | None = None
    seed: Seed | None = None
    stop: Stop | None = None

    def problem(self) -> tuple[str, str] | None:
        if self.best_of is not None and self.n is not None and self.best_of < self.n:
            return "best_of", "must be at least n (best_of candidates are generated, n of them returned)."
        return None


Inputs = NonEmptyText | Annotated[list[str | int | TokenIds], Meta(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]


class EmbeddingBody(Body, kw_only=True):
    input: Inputs
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    encoding_format: str | None = None


class ModerationBody(Body, kw_only=True):
    model: ModelName | None = None  # type: ignore[assignment]  # optional here: the endpoint names a default
    input: NonEmptyText | Annotated[list[str | Object], Meta(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]


class ImageBody(Body, kw_only=True):
    prompt: NonEmptyText
    n: Annotated[int, Meta(ge=1, le=MAX_IMAGES)] | None = None
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: Annotated[int, Meta(ge=0, le=100)] | None = None
    moderation: str | None = None


class SpeechBody(Body, kw_only=True):
    input: NonEmptyText
    voice: NonEmptyText | Object
    speed: Annotated[float, Meta(ge=0.25, le=4.0)] | None = None
    response_format: str | None = None
    instructions: str | None = None
    stream_format: str | None = None


class TranscriptionForm(Struct, kw_only=True):
    """The text fields of a transcription or translation upload (the file is checked apart)."""

    model: ModelName
    stream: bool | None = None
    temperature: UnitInterval | None = None
    response_format: str | None = None
    language: str | None = None
    prompt: str | None = None


class ResponsesBody(Body, kw_only=True):
    input: str | Annotated[list[Object], Meta(max_length=MAX_MESSAGES)] | None = None
    instructions: str | None = None
    previous_response_id: Identifier | None = None
    prompt: Object | None = None
    conversation: Identifier | Object | None = None
    stream_options: Object | None = None
    max_output_tokens: OutputTokens | None = None
    max_tool_calls: Annotated[int, Meta(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    top_logprobs: TopLogprobs | None = None
    tools: Annotated[list[Object], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | Object | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Object | None = None
    text: Object | None = None
    truncation: str | None = None
    include: Annotated[list[str], Meta(max_length=64)] | None = None
    store: bool | None = None
    background: bool | None = None
    metadata: Metadata | None = None
    service_tier: str | None = None
    safety_identifier: Identifier | None = None
    prompt_cache_key: Identifier | None = None

    def problem(self) -> tuple[str, str] | None:
        if self.input in (None, "", []) and not self.previous_response_id and self.prompt is None:
            return "input", "You must provide 'input'."
        return None
