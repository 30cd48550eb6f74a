"""Google Gemini (the Generative Language API): generateContent and streamGenerateContent?alt=sse,
converted from and to OpenAI chat (relay/formats/gemini_*), and passed through natively for
Gemini-format callers (the body as received, the model in the URL mapped, the events as they come).
The key goes in `x-goog-api-key`.

Base URL: https://generativelanguage.googleapis.com (the /v1beta version path is added when the
URL names none); model names may be given with or without the "models/" prefix.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from relay.adapters.base import AdapterInfo, ChatRequest, ChatResult, GenerateRequest, Operation, Target
from relay.errors import UpstreamError
from relay.formats.gemini_request import chat_to_gemini
from relay.formats.gemini_stream import GeminiChatStream, GeminiNativeStream, parts_tokens
from relay.formats.gemini_wire import classify_gemini, response_to_completion, usage_from_gemini
from relay.formats.generate_response import Framing
from relay.snapshot import ChannelKeyView, ChannelView
from relay.upstream import HttpRequest

DEFAULT_VERSION_PATH = "/v1beta"


def gemini_base(base_url: str) -> str:
    base = base_url.rstrip("/")
    if urlsplit(base).path in ("", "/"):
        base += DEFAULT_VERSION_PATH
    return base


def bare_model(model: str) -> str:
    return model.removeprefix("models/")


def model_path(model: str) -> str:
    return "/models/" + quote(bare_model(model), safe="")


class GeminiAdapter:
    info = AdapterInfo(
        type="gemini",
        label="Google Gemini",
        capabilities=frozenset({Operation.CHAT, Operation.MESSAGES, Operation.COUNT_TOKENS, Operation.GENERATE_CONTENT, Operation.MODELS}),
        generate_native=True,
    )

    def headers(self, key: ChannelKeyView) -> dict[str, str]:
        return {"x-goog-api-key": key.secret, "Content-Type": "application/json", "Accept-Encoding": "identity"}

    def chat_request(self, target: Target, request: ChatRequest) -> HttpRequest:
        base = gemini_base(target.channel.base_url) + model_path(target.upstream_model)
        url = base + (":streamGenerateContent?alt=sse" if request.stream else ":generateContent")
        return HttpRequest("POST", url, self.headers(target.key), orjson.dumps(chat_to_gemini(request.payload)))

    def chat_response(self, target: Target, request: ChatRequest, body: bytes) -> ChatResult:
        completion, usage, local = response_to_completion(orjson.loads(body), target.upstream_model)
        return ChatResult(body=orjson.dumps(completion), usage=usage, output_text_tokens=local)

    def chat_stream(self, target: Target, request: ChatRequest) -> GeminiChatStream:
        return GeminiChatStream(target.upstream_model, wants_usage=request.wants_usage, chunks_only=request.chunks_only)

    # --- Gemini-format callers, natively ------------------------------------------------------
    def generate_request(self, target: Target, request: GenerateRequest) -> HttpRequest:
        """Streams always go up as SSE (the one framing the decoder reads); the caller's framing is
        applied on the way back."""
        base = gemini_base(target.channel.base_url) + model_path(target.upstream_model)
        url = base + (":streamGenerateContent?alt=sse" if request.stream else ":generateContent")
        return HttpRequest("POST", url, self.headers(target.key), request.body)

    def generate_response(self, target: Target, request: GenerateRequest, body: bytes) -> ChatResult:
        data = orjson.loads(body)
        if not isinstance(data, dict) or not (isinstance(data.get("candidates"), list) or data.get("promptFeedback")):
            raise ValueError("not a GenerateContentResponse")
        return ChatResult(body=body, usage=usage_from_gemini(data.get("usageMetadata")), output_text_tokens=parts_tokens(data.get("candidates")))

    def generate_stream(self, target: Target, request: GenerateRequest) -> GeminiNativeStream:
        return GeminiNativeStream(Framing(request.sse))

    def generate_count_request(self, target: Target, request: GenerateRequest) -> HttpRequest:
        """:countTokens; a nested generateContentRequest names the model too, mapped the same way."""
        payload = request.payload
        nested = payload.get("generateContentRequest")
        body = request.body
        if isinstance(nested, dict):
            body = orjson.dumps(dict(payload, generateContentRequest=dict(nested, model="models/" + bare_model(target.upstream_model))))
        url = gemini_base(target.channel.base_url) + model_path(target.upstream_model) + ":countTokens"
        return HttpRequest("POST", url, self.headers(target.key), body)

    def classify_error(self, status: int, body: bytes, headers: Mapping[str, Any]) -> UpstreamError:
        return classify_gemini(status, body, headers)

    def models_request(self, channel: ChannelView, key: ChannelKeyView) -> HttpRequest:
        return HttpRequest("GET", gemini_base(channel.base_url) + "/models?pageSize=1000", self.headers(key))

    def models_response(self, body: bytes) -> list[str]:
        data = orjson.loads(body)
        names = (str(m.get("name") or "") for m in data.get("models", []) if isinstance(m, dict))
        return sorted(n[len("models/"):] if n.startswith("models/") else n for n in names if n)
