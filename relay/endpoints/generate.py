"""Gemini's own API: POST /v1beta/models/{model}:generateContent, :streamGenerateContent (SSE
with alt=sse, else one JSON array, as Google serves them), :countTokens, and GET /v1beta/models
and /v1beta/models/{model}; all of them under /v1/ too (google-genai 3.x for Python uses /v1), where
GET /v1/models is Google's list for a caller that sends Google's headers and OpenAI's otherwise.
Errors are Google-format.

Gemini channels serve them natively: the body goes up as received (the model lives in the URL,
which names the channel's upstream model) and the answer comes back as it came. Every other
chat-capable channel serves them by conversion: the request becomes OpenAI chat, the adapter does
what it does with chat, and the answer (or stream) is turned back into Gemini's shape.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from relay.adapters.base import Adapter, ChatRequest, GenerateAdapter, GenerateRequest, Operation, Target
from relay.attempt import Answer, Attempted, Streamed, Terms
from relay.context import RequestContext, Response, json_response
from relay.endpoints import calls
from relay.endpoints.base import HoldEstimate, output_ceiling
from relay.endpoints.parsing import json_object
from relay.validation import check, model_name
from relay.validation.gemini import GenerateBody
from relay.errors import GEMINI, GEMINI_ARRAY, RelayError, UpstreamError, bad_request
from relay.formats.generate_request import gemini_to_chat, prompt_tokens, wants_thoughts
from relay.formats.generate_response import (
    Framing,
    GenerateStream,
    completion_to_generate,
)
from relay.pricing import Price
from relay.settings import RelaySettings
from relay.upstream import UpstreamClient

if TYPE_CHECKING:
    from relay.endpoints.base import Endpoint
    from relay.pipeline import Pipeline

DEFAULT_PAGE, MAX_PAGE = 50, 1000  # models per listing page, as Google pages them
ARRAY_STREAM_HEADERS = [("Content-Type", "application/json; charset=UTF-8"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def query(environ: dict[str, Any], name: str) -> str | None:
    text = environ.get("QUERY_STRING") or ""
    if name + "=" not in text:
        return None
    return dict(parse_qsl(text)).get(name)


def path_model(raw: str) -> str:
    """The model named in the URL (the server decoded the path as latin-1; names are UTF-8)."""
    try:
        name = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise bad_request("The model name in the URL is not valid UTF-8.", param="model") from None
    name = name.removeprefix("models/")
    if not name:
        raise bad_request("The URL names no model.", param="model", code="missing_required_parameter")
    return model_name(name, GEMINI)


@dataclass(frozen=True, slots=True)
class GeminiRoute:
    """What a Gemini URL asks for: an action on a model (`endpoint` set), one model, or the list."""

    endpoint: Endpoint | None
    model: str | None
    log_path: str  # the URL with the model left out: request logs keep the shape, not the name


def google_caller(environ: dict[str, Any]) -> bool:
    """Whether a caller of a path both APIs share (GET /v1/models…) speaks Google's API: Google's
    SDKs send their key in x-goog-api-key and name themselves in x-goog-api-client."""
    return ("HTTP_X_GOOG_API_KEY" in environ or "HTTP_X_GOOG_API_CLIENT" in environ
            or "key=" in (environ.get("QUERY_STRING") or ""))


def is_gemini_path(path: str, environ: dict[str, Any]) -> bool:
    """Google's SDKs use /v1beta (the Gemini CLI, older SDKs) or /v1 (google-genai for Python 3.x)."""
    if path.startswith("/v1beta/"):
        return True
    return path.startswith("/v1/models") and (":" in path or google_caller(environ))


def gemini_route(path: str, actions: dict[str, Endpoint]) -> GeminiRoute | None:
    """The route of a Gemini URL, or None when it is none of them."""
    version = "/v1beta" if path.startswith("/v1beta/") else "/v1"
    rest = path[len(version):]
    if rest in ("/models", "/models/"):
        return GeminiRoute(None, None, f"{version}/models")
    if not rest.startswith("/models/"):
        return None
    tail = rest[len("/models/"):]
    name, colon, action = tail.rpartition(":")
    if colon:
        endpoint = actions.get(action)
        return GeminiRoute(endpoint, name, f"{version}/models/{{model}}:{action}") if endpoint is not None else None
    if "/" not in tail.strip("/"):
        return GeminiRoute(None, tail.strip("/"), f"{version}/models/{{model}}")
    return None


ROLES = (None, "", "user", "model", "function")  # unset is the user; "function" is the old role of function responses


def check_contents(contents: list[Any]) -> None:
    """What Google refuses, refused before any upstream call: a content that is not an object, a
    role other than user or model, parts that are missing or empty."""
    for n, content in enumerate(contents):
        if not isinstance(content, dict):
            raise bad_request(f"contents[{n}] must be an object.", param="contents")
        if content.get("role") not in ROLES:
            raise bad_request(f"Please use a valid role: user, model. (contents[{n}].role)", param="contents")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise bad_request(f"contents[{n}].parts must be a non-empty list of objects.", param="contents")


def parse_generate(body: bytes, environ: dict[str, Any], stream: bool) -> GenerateRequest:
    payload = json_object(body)
    route_model = environ.get("switchboard.model")
    model = path_model(route_model if route_model is not None else "")
    contents = payload.get("contents")
    if not isinstance(contents, list) or not contents:
        raise bad_request("contents is not specified: at least one content is required.", param="contents",
                          code="missing_required_parameter")
    check_contents(contents)
    config = check(payload, GenerateBody, GEMINI).generation_config
    max_tokens = config.max_output_tokens if config is not None else None
    candidates = (config.candidate_count if config is not None else None) or 1
    return GenerateRequest(model=model, payload=payload, body=body, stream=stream, sse=query(environ, "alt") == "sse",
                           max_tokens=max_tokens, candidates=candidates)


def as_chat(request: GenerateRequest, target: Target, output_cap: int | None) -> ChatRequest:
    """The request as OpenAI chat for a converting channel; the price's output cap, when the
    operator set one, bounds maxOutputTokens."""
    field = target.channel.config.output_limit_field or "max_tokens"
    payload = gemini_to_chat(request.payload, target.upstream_model, request.stream, field)
    if output_cap and payload.get(field, 0) > output_cap:
        payload[field] = output_cap
    return ChatRequest(model=request.model, payload=payload, stream=request.stream, wants_usage=True,
                       max_tokens=payload.get(field), chunks_only=True)


class GenerateEndpoint:
    operation = Operation.GENERATE_CONTENT
    error_format = GEMINI
    billed = True
    accepts_query_key = True  # Google's `?key=`

    def __init__(self, stream: bool) -> None:
        self.stream = stream

    def parse(self, body: bytes, environ: dict[str, Any]) -> GenerateRequest:
        return parse_generate(body, environ, self.stream)

    def model_of(self, request: GenerateRequest) -> str:
        return request.model

    def is_stream(self, request: GenerateRequest) -> bool:
        return request.stream

    def estimate(self, request: GenerateRequest, price: Price, settings: RelaySettings) -> HoldEstimate:
        local = prompt_tokens(request.payload)
        return HoldEstimate(prompt_tokens=2 * local, max_output_tokens=output_ceiling(request.max_tokens, price, settings),
                            local_prompt_tokens=local, choices=request.candidates, cappable=True)

    def cap_output(self, request: GenerateRequest, limit: int) -> bool:
        """generationConfig.maxOutputTokens (thinking counts inside it); a native channel gets the
        body re-encoded with it, otherwise the body goes up as received."""
        if request.max_tokens is not None and request.max_tokens <= limit:
            return False
        request.max_tokens = limit
        request.payload["generationConfig"] = dict(request.payload.get("generationConfig") or {}, maxOutputTokens=limit)
        request.body = orjson.dumps(request.payload)
        return True

    def attempt(self, client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target,
                request: GenerateRequest, terms: Terms) -> Attempted:
        error_format = GEMINI if request.sse else GEMINI_ARRAY  # how a failure mid-stream is told
        if adapter.info.generate_native:
            native: GenerateAdapter = adapter  # type: ignore[assignment]  # info.generate_native: it has generate_*

            def parse(body: bytes) -> calls.Parsed:
                result = native.generate_response(target, request, body)
                return result.body, result.usage, result.output_text_tokens

            native_decoder = native.generate_stream(target, request) if request.stream else None
            outcome = calls.answer(client, ctx, adapter, target, native.generate_request(target, request), terms,
                                   decoder=native_decoder, parse=parse, what="a Gemini response", error_format=error_format)
            return self._framed(outcome, request)
        chat = as_chat(request, target, terms.price.max_output_tokens)
        thoughts = wants_thoughts(request.payload)

        def parse_chat(body: bytes) -> calls.Parsed:
            result = adapter.chat_response(target, chat, body)
            return orjson.dumps(completion_to_generate(orjson.loads(result.body), result.usage, thoughts)), result.usage, result.output_text_tokens

        decoder = None
        if request.stream:
            decoder = GenerateStream(adapter.chat_stream(target, chat), target.upstream_model, terms.prompt_estimate,
                                     Framing(request.sse), thoughts)
        outcome = calls.answer(client, ctx, adapter, target, adapter.chat_request(target, chat), terms,
                               decoder=decoder, parse=parse_chat, what="a chat completion", error_format=error_format)
        return self._framed(outcome, request)

    @staticmethod
    def _framed(outcome: Attempted, request: GenerateRequest) -> Attempted:
        """A stream without alt=sse is one JSON array, served as JSON, as Google does."""
        if request.stream and not request.sse and isinstance(outcome, Streamed):
            return replace(outcome, headers=list(ARRAY_STREAM_HEADERS))
        return outcome


class GeminiCountTokensEndpoint:
    """Free: Gemini channels count upstream; others answer the relay's local estimate."""

    operation = Operation.COUNT_TOKENS
    error_format = GEMINI
    billed = False
    accepts_query_key = True

    def parse(self, body: bytes, environ: dict[str, Any]) -> GenerateRequest:
        payload = json_object(body)
        model = path_model(environ.get("switchboard.model") or "")
        inner = payload.get("generateContentRequest")
        counted = inner if isinstance(inner, dict) else payload
        if not isinstance(counted.get("contents", []), list):
            raise bad_request("contents must be a list.", param="contents")
        return GenerateRequest(model=model, payload=payload, body=body)

    def model_of(self, request: GenerateRequest) -> str:
        return request.model

    def is_stream(self, request: GenerateRequest) -> bool:
        return False

    def estimate(self, request: GenerateRequest, price: Price, settings: RelaySettings) -> HoldEstimate:
        return HoldEstimate(0, 0, 0)

    def attempt(self, client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target,
                request: GenerateRequest, terms: Terms | None) -> Attempted:
        if not adapter.info.generate_native:
            inner = request.payload.get("generateContentRequest")
            local = prompt_tokens(inner if isinstance(inner, dict) else request.payload)
            return Answer(json_response(200, orjson.dumps({"totalTokens": local})), None)
        native: GenerateAdapter = adapter  # type: ignore[assignment]  # info.generate_native: it has generate_*
        response = calls.send(client, adapter, target, native.generate_count_request(target, request))
        if isinstance(response, UpstreamError):
            return response
        body = calls.read(response)
        if isinstance(body, UpstreamError):
            return body
        try:
            data = orjson.loads(body)
            int(data["totalTokens"])
        except (ValueError, KeyError, TypeError):
            return calls.invalid("a token count")
        return Answer(json_response(200, body), None)


# --- the model list -----------------------------------------------------------------------
def model_entry(name: str, price: Price | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"models/{name}", "baseModelId": name, "version": "switchboard", "displayName": name,
             "supportedGenerationMethods": METHODS}
    if price is not None and price.max_output_tokens:
        entry["outputTokenLimit"] = price.max_output_tokens
    return entry


def _count(text: str | None) -> int:
    """A non-negative count from the query string; 0 when it is not one (str.isdigit admits "²")."""
    return int(text) if text and text.isascii() and text.isdigit() else 0


def list_models(pipeline: Pipeline, ctx: RequestContext, environ: dict[str, Any], name: str | None) -> Response:
    """The models this key may use, in Google's shape (paged by pageSize/pageToken), or one of them."""
    snap = pipeline.holder.current
    now = time.time()
    key = pipeline.authenticate(ctx, environ, snap, now, query_key=True)
    models = snap.models_for_key(key, now)
    if name is not None:
        model = path_model(name)
        if model not in models:
            raise RelayError(404, "model_not_found", f"models/{model} is not found or this key may not use it.", param="model")
        return json_response(200, orjson.dumps(model_entry(model, snap.price_at(model, now))))
    size = min(_count(query(environ, "pageSize")), MAX_PAGE) or DEFAULT_PAGE
    start = _count(query(environ, "pageToken"))
    page = models[start:start + size]
    body: dict[str, Any] = {"models": [model_entry(m, snap.price_at(m, now)) for m in page]}
    if start + size < len(models):
        body["nextPageToken"] = str(start + size)
    return json_response(200, orjson.dumps(body))
