"""The OpenAPI 3.1 description of the relay's endpoints, served at `GET /v1/openapi.json`.

Request bodies are the validation structs' own JSON Schema (msgspec), so the document states what
the relay checks and cannot drift from it; the status codes are those the relay answers (the
`RelayError`s of relay/, docs/api.md). Successful answers are the upstream APIs' own shapes and are
described as such, not re-specified here. The relay's HTTP server may also answer 408, 413, 431,
503 or 505 to a malformed, slow or excess connection before any route runs (relay/http_request.py).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from relay.steering import SteerBody
from relay.validation import anthropic, gemini, openai
from relay.validation.fields import MODEL_MAX_CHARS

JSON = "application/json"
SSE = "text/event-stream"
OBJECT: dict[str, Any] = {"type": "object"}
TEXT: dict[str, Any] = {"type": "string"}
SSE_EVENT: dict[str, Any] = {"type": "object", "required": ["data"], "properties": {"event": TEXT, "data": TEXT, "id": TEXT}}

# Errors, each in the format of the API it answers for.
OPENAI, ANTHROPIC, GOOGLE = "OpenAIError", "AnthropicError", "GoogleError"
NULLABLE_TEXT: dict[str, Any] = {"type": ["string", "null"]}
ERRORS: dict[str, dict[str, Any]] = {
    OPENAI: {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "code"],
        "properties": {"message": TEXT, "type": TEXT, "param": NULLABLE_TEXT, "code": NULLABLE_TEXT}}}},
    ANTHROPIC: {"type": "object", "required": ["type", "error"], "properties": {
        "type": {"const": "error"}, "request_id": TEXT,
        "error": {"type": "object", "required": ["type", "message"], "properties": {"type": TEXT, "message": TEXT}}}},
    GOOGLE: {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "status"],
        "properties": {"code": {"type": "integer"}, "message": TEXT, "status": TEXT, "details": {"type": "array", "items": OBJECT}}}}},
}

MEANING = {
    400: "The request is invalid (the error names the field), or the upstream refused it",
    401: "No API key, an unknown one, or a disabled or expired key",
    403: "Not allowed: banned, address not allowed, model not allowed for this key, or no credit left",
    404: "Unknown model, request id or URL",
    408: "The request body did not arrive in time",
    409: "Idempotency-Key: the first request is still running, the key was used for another request, or its answer is too large to replay",
    413: "The request body is larger than the relay accepts",
    429: "A rate or concurrency limit, or every upstream is at capacity (Retry-After says when to come back)",
    501: "The model's provider cannot serve this (endpoint, streaming, or a feature the conversion cannot carry)",
    502: "The upstream failed or answered something invalid",
    503: "No upstream channel is available, or the gateway cannot reach its datastore (Retry-After)",
    504: "The upstream did not answer in time",
}
AUTHED = (401, 403, 503)  # any authenticated route: the key check needs the datastore
BILLED = (400, 401, 403, 404, 408, 409, 413, 429, 501, 502, 503, 504)
COUNTED = (400, 401, 403, 404, 408, 413, 429, 501, 502, 503, 504)  # count_tokens: no hold, no Idempotency-Key
CUSTOMER = (400, *AUTHED)

BEARER: dict[str, list[str]] = {"bearer": []}
X_API_KEY: dict[str, list[str]] = {"apiKeyHeader": []}
GOOGLE_KEYS: list[dict[str, list[str]]] = [{"googleApiKeyHeader": []}, {"googleApiKeyQuery": []}, BEARER, X_API_KEY]
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "description": "Retry a billed request safely: 1 to 255 printable ASCII characters (docs/api.md)",
                   "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"}}
MODEL_PARAM = {"name": "model", "in": "path", "required": True, "description": "The model's name, as /v1beta/models lists it",
               "schema": {"type": "string", "minLength": 1, "maxLength": MODEL_MAX_CHARS}, "example": "gemini-2.5-flash"}
DATE = {"type": "string", "format": "date"}


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    tag: str
    statuses: tuple[int, ...]
    body: type | None = None  # a validation struct
    ok: tuple[str, ...] = (JSON,)  # media types of a 200
    error: str = OPENAI  # or several, joined by "|": the caller's headers choose
    form: bool = False  # multipart/form-data with a file
    idempotent: bool = False
    security: list[dict[str, list[str]]] | None = None  # None: the default (a bearer key or x-api-key)
    parameters: tuple[dict[str, Any], ...] = ()
    example: dict[str, Any] | None = None  # a request body that works
    ok_json: dict[str, Any] | None = None  # a 200's JSON body, when not an object


HELLO = [{"role": "user", "content": "Say hello"}]
GEMINI_HELLO = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}


OPERATIONS: tuple[Op, ...] = (
    Op("POST", "/v1/chat/completions", "Chat completion (OpenAI format; any provider's model)", "openai", BILLED, openai.ChatBody,
       (JSON, SSE), idempotent=True, example={"model": "gpt-4o-mini", "messages": HELLO}),
    Op("POST", "/v1/completions", "Text completion (legacy OpenAI)", "openai", BILLED, openai.CompletionBody, (JSON, SSE), idempotent=True,
       example={"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello"}),
    Op("POST", "/v1/embeddings", "Embeddings", "openai", BILLED, openai.EmbeddingBody, idempotent=True,
       example={"model": "text-embedding-3-small", "input": "Say hello"}),
    Op("POST", "/v1/moderations", "Moderation", "openai", BILLED, openai.ModerationBody, idempotent=True,
       example={"model": "omni-moderation-latest", "input": "Say hello"}),
    Op("POST", "/v1/images/generations", "Image generation", "openai", BILLED, openai.ImageBody, idempotent=True,
       example={"model": "dall-e-3", "prompt": "A lighthouse at dusk"}),
    Op("POST", "/v1/audio/speech", "Text to speech: the audio, as the upstream encodes it", "openai", BILLED, openai.SpeechBody,
       ("audio/*", "application/octet-stream"), idempotent=True, example={"model": "tts-1", "input": "Say hello", "voice": "alloy"}),
    Op("POST", "/v1/audio/transcriptions", "Transcription of an uploaded file", "openai", BILLED, openai.TranscriptionForm,
       (JSON, "text/*"), form=True, idempotent=True),
    Op("POST", "/v1/audio/translations", "Translation to English of an uploaded file", "openai", BILLED, openai.TranscriptionForm,
       (JSON, "text/*"), form=True, idempotent=True),
    Op("POST", "/v1/responses", "Responses API", "openai", BILLED, openai.ResponsesBody, (JSON, SSE), idempotent=True,
       example={"model": "gpt-4o-mini", "input": "Say hello"}),
    Op("GET", "/v1/models", "The models this key may use (OpenAI's list; Anthropic's when anthropic-version is sent)", "openai", AUTHED,
       error=f"{OPENAI}|{ANTHROPIC}", parameters=({"name": "anthropic-version", "in": "header", "required": False, "schema": TEXT},)),
    Op("POST", "/v1/messages", "Messages (Anthropic format; any provider's model)", "anthropic", BILLED, anthropic.MessagesBody, (JSON, SSE),
       ANTHROPIC, idempotent=True, example={"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": HELLO}),
    Op("POST", "/v1/messages/count_tokens", "Count a Messages request's input tokens", "anthropic", COUNTED, anthropic.CountTokensBody,
       error=ANTHROPIC, example={"model": "claude-sonnet-4-5", "messages": HELLO}),
    Op("POST", "/v1beta/models/{model}:generateContent", "Generate content (Gemini format; any provider's model)", "gemini", BILLED,
       gemini.GenerateBody, error=GOOGLE, security=GOOGLE_KEYS, parameters=(MODEL_PARAM,), example=GEMINI_HELLO),
    Op("POST", "/v1beta/models/{model}:streamGenerateContent", "Generate content, streamed (alt=sse: SSE; otherwise one JSON array)",
       "gemini", BILLED, gemini.GenerateBody, (JSON, SSE), GOOGLE, security=GOOGLE_KEYS,
       parameters=(MODEL_PARAM, {"name": "alt", "in": "query", "required": False, "schema": {"type": "string", "enum": ["sse"]}}),
       example=GEMINI_HELLO, ok_json={"type": "array", "items": OBJECT}),
    Op("POST", "/v1beta/models/{model}:countTokens", "Count a request's tokens (Gemini format)", "gemini", COUNTED, gemini.GenerateBody,
       error=GOOGLE, security=GOOGLE_KEYS, parameters=(MODEL_PARAM,), example=GEMINI_HELLO),
    Op("GET", "/v1beta/models", "The models this key may use (Gemini's list, paged)", "gemini", AUTHED, error=GOOGLE, security=GOOGLE_KEYS,
       parameters=({"name": "pageSize", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
                   {"name": "pageToken", "in": "query", "required": False, "schema": TEXT})),
    Op("GET", "/v1beta/models/{model}", "One model this key may use (Gemini's shape)", "gemini", (400, 404, *AUTHED), error=GOOGLE,
       security=GOOGLE_KEYS, parameters=(MODEL_PARAM,)),
    Op("GET", "/v1/generation", "One request made with this key: tokens, cost, latency, status", "key", (404, *CUSTOMER),
       parameters=({"name": "id", "in": "query", "required": True, "description": "The request id (X-Request-Id)", "schema": TEXT},)),
    Op("GET", "/v1/key", "This key: limit, spend, what is left, budgets, rate limits", "key", CUSTOMER),
    Op("GET", "/v1/auth/key", "The same as /v1/key (OpenRouter's older path)", "key", CUSTOMER),
    Op("GET", "/v1/dashboard/billing/subscription", "Legacy OpenAI billing: the spending limit", "key", CUSTOMER),
    Op("GET", "/v1/dashboard/billing/usage", "Legacy OpenAI billing: spend between two dates (cents), at most 100 days", "key", CUSTOMER,
       parameters=({"name": "start_date", "in": "query", "required": True, "schema": DATE},
                   {"name": "end_date", "in": "query", "required": True, "description": "Exclusive", "schema": DATE})),
    Op("GET", "/v1/openapi.json", "This document", "relay", (), security=[]),
    Op("GET", "/healthz", "Liveness and the snapshot the relay routes by", "relay", (), security=[]),
)


def _ecma(schema: Any) -> Any:
    """msgspec writes Python's \\A and \\Z anchors; JSON Schema patterns are ECMA-262, which spells them ^ and $."""
    if isinstance(schema, dict):
        return {k: (re.sub(r"\\Z$", "$", re.sub(r"^\\A", "^", v)) if k == "pattern" and isinstance(v, str) else _ecma(v))
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [_ecma(v) for v in schema]
    return schema


def _bodies() -> tuple[dict[type, dict[str, Any]], dict[str, Any]]:
    structs = sorted({op.body for op in OPERATIONS if op.body is not None} | {SteerBody}, key=lambda t: (t.__module__, t.__name__))
    refs, components = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    return dict(zip(structs, _ecma(list(refs)), strict=True)), _ecma(components)


STEER_REF = {"$ref": "#/components/schemas/SteerBody"}  # `models` and `provider`, in every JSON body (docs/routing.md)


def _request_body(op: Op, ref: dict[str, Any]) -> dict[str, Any]:
    if not op.form:
        media: dict[str, Any] = {"schema": {"allOf": [ref, STEER_REF]}}
        if op.example is not None:
            media["example"] = op.example
        return {"required": True, "content": {JSON: media}}
    upload = {"allOf": [ref, {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}]}
    return {"required": True, "content": {"multipart/form-data": {"schema": upload}}}


def _responses(op: Op) -> dict[str, Any]:
    request_id = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
    ok = {media: {"schema": {JSON: op.ok_json or OBJECT, SSE: SSE_EVENT}.get(media, TEXT)} for media in op.ok}
    out: dict[str, Any] = {"200": {"description": "OK", "headers": request_id, "content": ok}}
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in op.error.split("|")]
    error = {JSON: {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}}
    for status in op.statuses:
        out[str(status)] = {"description": MEANING[status], "headers": request_id, "content": error}
    return out


def _operation(op: Op, bodies: dict[type, dict[str, Any]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"operationId": re.sub(r"\W+", "_", f"{op.method} {op.path}".lower()).strip("_"), "summary": op.summary,
                             "tags": [op.tag], "responses": _responses(op)}
    parameters = list(op.parameters) + ([IDEMPOTENCY_KEY] if op.idempotent else [])
    if parameters:
        entry["parameters"] = parameters
    if op.body is not None:
        entry["requestBody"] = _request_body(op, bodies[op.body])
    if op.security is not None:
        entry["security"] = op.security
    return entry


def document() -> dict[str, Any]:
    bodies, schemas = _bodies()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, bodies)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard relay", "version": "1",
                 "description": "One base URL and one key for OpenAI-, Anthropic- and Gemini-format clients. Authenticate with "
                                "`Authorization: Bearer <key>` (or `x-api-key`; Gemini clients also `x-goog-api-key` or `?key=`). "
                                "Every answer carries X-Request-Id; settled answers carry x-switchboard-cost-micro-usd (docs/api.md)."},
        "security": [BEARER, X_API_KEY],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "googleApiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-goog-api-key"},
                "googleApiKeyQuery": {"type": "apiKey", "in": "query", "name": "key"},
            },
            "headers": {"RequestId": {"description": "The request's id (GET /v1/generation?id=…)", "schema": TEXT}},
            "schemas": {**ERRORS, **schemas},
        },
        "paths": paths,
    }


@functools.cache
def document_bytes() -> bytes:
    """Built on the first request for it, then kept: answering it costs a write."""
    return orjson.dumps(document())
