"""Facts of Gemini's wire format: usage, finish reasons, errors, tool call ids, and a
GenerateContentResponse as an OpenAI completion."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from relay.errors import ErrorKind, UpstreamError
from relay.formats.common import completion, new_id, retry_after, tool_arguments
from relay.pricing import Usage
from relay.tokens import text_tokens

MAX_MESSAGE = 500
SIGNATURE_MARK = "__ts__"  # tool call id = call_<random>__ts__<Gemini thought signature>

FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

STATUS_KINDS = {
    "UNAUTHENTICATED": ErrorKind.AUTH,
    "PERMISSION_DENIED": ErrorKind.AUTH,
    "FAILED_PRECONDITION": ErrorKind.QUOTA,  # billing not enabled, or the key's region is not served
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMIT,
    "UNAVAILABLE": ErrorKind.OVERLOADED,
    "INTERNAL": ErrorKind.TRANSIENT,
    "DEADLINE_EXCEEDED": ErrorKind.TIMEOUT,
    "NOT_FOUND": ErrorKind.NOT_FOUND,
    "INVALID_ARGUMENT": ErrorKind.BAD_REQUEST,
}
HTTP_KINDS = {401: ErrorKind.AUTH, 403: ErrorKind.AUTH, 404: ErrorKind.NOT_FOUND, 429: ErrorKind.RATE_LIMIT,
              503: ErrorKind.OVERLOADED, 504: ErrorKind.TIMEOUT}
AUTH_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED", "ACCESS_TOKEN_EXPIRED"}


def usage_from_gemini(meta: Any) -> Usage | None:
    """promptTokenCount includes cached content; thoughts are counted apart from candidates."""
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    cached = min(int(meta.get("cachedContentTokenCount") or 0), prompt)
    return Usage(input=prompt - cached, cache_read=cached, output=int(meta.get("candidatesTokenCount") or 0),
                 reasoning=int(meta.get("thoughtsTokenCount") or 0))


def classify_error_body(status: int, data: Any) -> UpstreamError:
    err = data.get("error") if isinstance(data, dict) else None
    err = err if isinstance(err, dict) else {}
    message = str(err.get("message") or data)[:MAX_MESSAGE]
    reasons = {d.get("reason") for d in err.get("details") or () if isinstance(d, dict)}
    kind: ErrorKind | None
    if reasons & AUTH_REASONS:
        kind = ErrorKind.AUTH
    else:
        kind = STATUS_KINDS.get(str(err.get("status") or "")) or HTTP_KINDS.get(status)
    if kind is None:
        kind = ErrorKind.BAD_REQUEST if 400 <= status < 500 and status not in (409, 200) else ErrorKind.TRANSIENT
    return UpstreamError(kind, status, message)


def classify_gemini(status: int, body: bytes, headers: Mapping[str, Any]) -> UpstreamError:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = body[:MAX_MESSAGE].decode("utf-8", "replace")
    error = classify_error_body(status, data)
    return UpstreamError(error.kind, error.status, error.message or f"upstream status {status}", retry_after(headers))


def call_id(part: dict[str, Any]) -> str:
    """An OpenAI tool call id for a functionCall part. Gemini wants a call's thought signature back
    with it in the next turn; OpenAI callers only send back the id, so the signature rides in it."""
    base = (part.get("functionCall") or {}).get("id") or new_id("call_")
    signature = part.get("thoughtSignature")
    return f"{base}{SIGNATURE_MARK}{signature}" if signature else base


def split_call_id(tool_call_id: str) -> tuple[str, str | None]:
    """(Gemini's own call id or ours, thought signature or None) from an id made by `call_id`."""
    base, mark, signature = str(tool_call_id or "").partition(SIGNATURE_MARK)
    return base, (signature if mark else None)


def tool_call(part: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    fn = part.get("functionCall") or {}
    call: dict[str, Any] = {"id": call_id(part), "type": "function",
            "function": {"name": fn.get("name") or "", "arguments": tool_arguments(fn.get("args") or {})}}
    if index is not None:
        call["index"] = index
    return call


def finish_reason(candidate: dict[str, Any], called: bool) -> str | None:
    reason = candidate.get("finishReason")
    if not reason:
        return None
    mapped = FINISH.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def candidate_choice(candidate: dict[str, Any]) -> tuple[dict[str, Any], int]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            calls.append(tool_call(part))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None, "refusal": None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    local = sum(text_tokens(t) for t in (*texts, *thoughts)) + sum(text_tokens(c["function"]["arguments"]) for c in calls)
    choice = {"index": int(candidate.get("index") or 0), "message": message, "logprobs": None,
              "finish_reason": finish_reason(candidate, bool(calls)) or "stop"}
    return choice, local


def response_to_completion(data: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage | None, int]:
    """(OpenAI chat.completion, usage, locally counted output tokens) for a GenerateContentResponse.
    A prompt blocked by safety filters has no candidates: it becomes an empty content_filter answer."""
    if not isinstance(data, dict):
        raise ValueError("not a Gemini response")
    candidates = data.get("candidates") or []
    if not candidates and not (data.get("promptFeedback") or {}).get("blockReason"):
        raise ValueError("a Gemini response without candidates")
    choices, local = [], 0
    for candidate in candidates:
        choice, tokens = candidate_choice(candidate)
        choices.append(choice)
        local += tokens
    if not choices:
        choices = [{"index": 0, "message": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None,
                    "finish_reason": "content_filter"}]
    usage = usage_from_gemini(data.get("usageMetadata"))
    return completion(data.get("responseId") or new_id("chatcmpl-"), data.get("modelVersion") or model, choices, usage), usage, local
