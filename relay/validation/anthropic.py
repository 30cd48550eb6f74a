"""Schemas of the Anthropic-format request bodies: /v1/messages and /v1/messages/count_tokens.

Roles are any non-empty text (Claude Code sends `system` turns inside `messages`; what a role means
is the conversion's business). Content blocks are checked as deep as the conversion to OpenAI chat
reads them: a `source` that is not an object, or a tool result holding numbers, is the caller's error.
"""
from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from relay.validation.fields import (
    MAX_MESSAGES,
    MAX_STOP,
    MAX_TOOLS,
    Count,
    Identifier,
    ModelName,
    Object,
    OutputTokens,
    Role,
    UnitInterval,
)


class Source(Struct, kw_only=True):
    type: str | None = None
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class NestedBlock(Struct, kw_only=True):
    """A block inside a tool result: text or an image."""

    type: str | None = None
    text: str | None = None
    source: Source | None = None


class Block(Struct, kw_only=True):
    type: str
    text: str | None = None
    source: Source | None = None
    title: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[NestedBlock] | None = None
    is_error: bool | None = None
    cache_control: Object | None = None


class Message(Struct, kw_only=True):
    role: Role
    content: str | list[Block]


class SystemBlock(Struct, kw_only=True):
    type: str | None = None
    text: str | None = None
    cache_control: Object | None = None


class Tool(Struct, kw_only=True):
    name: str | None = None
    type: str | None = None
    description: str | None = None
    input_schema: Object | None = None


class ToolChoice(Struct, kw_only=True):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Struct, kw_only=True):
    type: str
    budget_tokens: Count | None = None


class Metadata(Struct, kw_only=True):
    user_id: Identifier | None = None


class CountTokensBody(Struct, kw_only=True):
    model: ModelName
    messages: Annotated[list[Message], Meta(min_length=1, max_length=MAX_MESSAGES)]
    system: str | list[SystemBlock] | None = None
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class MessagesBody(CountTokensBody, kw_only=True):
    max_tokens: OutputTokens
    stream: bool | None = None
    temperature: UnitInterval | None = None  # Anthropic's range is 0–1
    top_p: UnitInterval | None = None
    top_k: Count | None = None
    stop_sequences: Annotated[list[str], Meta(max_length=MAX_STOP)] | None = None
    metadata: Metadata | None = None
    service_tier: str | None = None
