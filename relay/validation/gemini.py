"""Schema of Gemini-format request bodies (:generateContent, :streamGenerateContent, :countTokens).

The model comes from the URL (checked as a model name there). Declared: what the relay reads (the
contents it counts, the output limit and candidate count it holds for), what a conversion walks
into, and what must be bounded; unknown fields pass through to Gemini channels untouched.
"""
from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from relay.validation.fields import MAX_MESSAGES, MAX_STOP, MAX_TOOLS, Count, Object, OutputTokens, Role, Seed, Temperature, UnitInterval

MAX_CANDIDATES = 8  # Gemini's own limit on candidateCount


class Part(Struct, kw_only=True, rename="camel"):
    text: str | None = None
    inline_data: Object | None = None
    file_data: Object | None = None
    function_call: Object | None = None
    function_response: Object | None = None
    thought: bool | None = None
    thought_signature: str | None = None


class Content(Struct, kw_only=True):
    parts: Annotated[list[Part], Meta(max_length=MAX_MESSAGES)]
    role: Role | None = None


class GenerationConfig(Struct, kw_only=True, rename="camel"):
    max_output_tokens: OutputTokens | None = None
    candidate_count: Annotated[int, Meta(ge=1, le=MAX_CANDIDATES)] | None = None
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    top_k: Count | None = None
    seed: Seed | None = None
    stop_sequences: Annotated[list[str], Meta(max_length=MAX_STOP)] | None = None
    thinking_config: Object | None = None
    response_mime_type: str | None = None


class GenerateBody(Struct, kw_only=True, rename="camel"):
    contents: Annotated[list[Content], Meta(min_length=1, max_length=MAX_MESSAGES)]
    system_instruction: Content | None = None
    tools: Annotated[list[Object], Meta(max_length=MAX_TOOLS)] | None = None
    tool_config: Object | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: Annotated[list[Object], Meta(max_length=64)] | None = None
    cached_content: Annotated[str, Meta(max_length=256)] | None = None
