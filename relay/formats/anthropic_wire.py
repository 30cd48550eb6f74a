"""Facts of Anthropic's wire format: usage, stop reasons, errors, and a Message as an OpenAI completion."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from relay.errors import ErrorKind, UpstreamError
from relay.formats.common import completion, new_id, retry_after, tool_arguments
from relay.pricing import Usage
from relay.tokens import text_tokens

MAX_MESSAGE = 500

STOP_TO_FINISH: dict[str | None, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

ERROR_KINDS = {
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.PERMISSION,
    "billing_error": ErrorKind.QUOTA,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "overloaded_error": ErrorKind.OVERLOADED,
    "api_error": ErrorKind.TRANSIENT,
    "timeout_error": ErrorKind.TIMEOUT,
    "not_found_error": ErrorKind.NOT_FOUND,
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "request_too_large": ErrorKind.BAD_REQUEST,
}

STATUS_KINDS = {401: ErrorKind.AUTH, 402: ErrorKind.QUOTA, 403: ErrorKind.PERMISSION, 404: ErrorKind.NOT_FOUND, 408: ErrorKind.TIMEOUT,
                413: ErrorKind.BAD_REQUEST, 429: ErrorKind.RATE_LIMIT, 503: ErrorKind.OVERLOADED, 504: ErrorKind.TIMEOUT,
                529: ErrorKind.OVERLOADED}


def usage_from_anthropic(u: Any) -> Usage | None:
    """Anthropic's input_tokens exclude cache reads and writes; output_tokens include thinking."""
    if not isinstance(u, dict):
        return None
    output = int(u.get("output_tokens") or 0)
    thinking = int((u.get("output_tokens_details") or {}).get("thinking_tokens") or 0)
    thinking = min(thinking, output)
    return Usage(
        input=int(u.get("input_tokens") or 0),
        cache_read=int(u.get("cache_read_input_tokens") or 0),
        cache_write=int(u.get("cache_creation_input_tokens") or 0),
        output=output - thinking,
        reasoning=thinking,
    )


def error_of(data: Any) -> tuple[str | None, str]:
    """(error type, message) of an Anthropic error body, tolerating anything."""
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return err.get("type"), str(err.get("message") or "")[:MAX_MESSAGE]
    return None, str(data)[:MAX_MESSAGE]


def classify_anthropic(status: int, body: bytes, headers: Mapping[str, Any]) -> UpstreamError:
    try:
        err_type, message = error_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        err_type, message = None, body[:MAX_MESSAGE].decode("utf-8", "replace")
    kind = ERROR_KINDS.get(err_type or "") or STATUS_KINDS.get(status)
    if kind is None:
        kind = ErrorKind.BAD_REQUEST if 400 <= status < 500 and status != 409 else ErrorKind.TRANSIENT
    return UpstreamError(kind, status, message or f"upstream status {status}", retry_after(headers))


def stream_error(data: dict[str, Any]) -> UpstreamError:
    """An `error` event inside a 200 stream (overloaded mid-way, usually)."""
    err_type, message = error_of(data)
    return UpstreamError(ERROR_KINDS.get(err_type or "", ErrorKind.TRANSIENT), 200, message or "stream error")


def message_to_completion(data: dict[str, Any]) -> tuple[dict[str, Any], Usage | None, int]:
    """(OpenAI chat.completion, usage, locally counted output tokens) for an Anthropic Message."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise ValueError("not an Anthropic message")
    texts, thoughts, calls = [], [], []
    for block in data["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            thoughts.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": tool_arguments(block.get("input"))}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None, "refusal": None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": STOP_TO_FINISH.get(data.get("stop_reason"), "stop")}
    usage = usage_from_anthropic(data.get("usage"))
    local = sum(text_tokens(t) for t in (*texts, *thoughts)) + sum(text_tokens(c["function"]["arguments"]) for c in calls)
    return completion(data.get("id") or new_id("msg_"), data.get("model") or "", [choice], usage), usage, local
