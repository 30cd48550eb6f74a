"""Pieces every conversion shares: data URLs, tool arguments, ids, and OpenAI chunk framing."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import orjson

from relay.pricing import Usage

RAW_ARGUMENTS = "_raw_arguments"  # where tool arguments that are not a JSON object are kept


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def parse_data_url(url: object) -> tuple[str, str] | None:
    """("image/png", base64 data) from a data: URL, or None when `url` is not a base64 data URL."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return header[: -len(";base64")] or "application/octet-stream", data


def data_url(mime: str, data: str) -> str:
    return f"data:{mime};base64,{data}"


def tool_input(arguments: Any) -> dict[str, Any]:
    """OpenAI's `arguments` (JSON text) as the object Anthropic and Gemini want.

    Models sometimes emit arguments that are not valid JSON (cut off by max_tokens); callers send
    them back in the history. Refusing would strand the conversation, so the text is kept under
    RAW_ARGUMENTS instead of being dropped.
    """
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        return {RAW_ARGUMENTS: str(arguments)}
    return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS: str(arguments)}


def tool_arguments(value: object) -> str:
    """An object as OpenAI's `arguments` JSON text (the inverse of `tool_input`)."""
    if isinstance(value, dict) and set(value) == {RAW_ARGUMENTS}:
        return str(value[RAW_ARGUMENTS])
    return orjson.dumps(value if value is not None else {}).decode()


def text_parts(content: Any) -> list[str]:
    """The texts of an OpenAI message content (a string or a list of parts)."""
    if isinstance(content, str):
        return [content]
    out = []
    for part in content or ():
        if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            out.append(part["text"])
    return out


def openai_usage(usage: Usage) -> dict[str, Any]:
    """The five counts back in OpenAI's shape (prompt includes cached, completion includes reasoning)."""
    prompt = usage.input + usage.cache_read + usage.cache_write
    completion = usage.output + usage.reasoning
    details = {"cached_tokens": usage.cache_read}
    if usage.cache_write:
        details["cache_write_tokens"] = usage.cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def sse(data: dict[str, Any] | bytes) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"


def named_sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"


class ChunkMaker:
    """chat.completion.chunk dicts sharing one id, creation time and model."""

    __slots__ = ("id", "created", "model")

    def __init__(self, chunk_id: str, model: str):
        self.id = chunk_id
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": openai_usage(usage)}


def completion(completion_id: str, model: str, choices: list[dict[str, Any]], usage: Usage | None) -> dict[str, Any]:
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = openai_usage(usage)
    return body


def retry_after(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds to wait, from Retry-After (or OpenAI's retry-after-ms), when the upstream says."""
    raw = headers.get("retry-after") if headers is not None else None
    if raw is None:
        ms = headers.get("retry-after-ms") if headers is not None else None
        return float(ms) / 1000 if ms and ms.isascii() and ms.replace(".", "", 1).isdigit() else None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return None
