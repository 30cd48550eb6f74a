"""Google Gemini (the Generative Language API): generateContent and streamGenerateContent?alt=sse,
converted from and to OpenAI chat (relay/formats/gemini_*). The key goes in `x-goog-api-key`.

Base URL: https://generativelanguage.googleapis.com (the /v1beta version path is added when the
URL names none); model names may be given with or without the "models/" prefix.
"""
from __future__ import annotations

from urllib.parse import quote, urlsplit

import orjson

from relay.adapters.base import AdapterInfo, ChatRequest, ChatResult, Operation, Target
from relay.errors import UpstreamError
from relay.formats.gemini_request import chat_to_gemini
from relay.formats.gemini_stream import GeminiChatStream
from relay.formats.gemini_wire import classify_gemini, response_to_completion
from relay.snapshot import ChannelKeyView, ChannelView
from relay.upstream import HttpRequest

DEFAULT_VERSION_PATH = "/v1beta"


def gemini_base(base_url: str) -> str:
    base = base_url.rstrip("/")
    if urlsplit(base).path in ("", "/"):
        base += DEFAULT_VERSION_PATH
    return base


def model_path(model: str) -> str:
    name = model[len("models/"):] if model.startswith("models/") else model
    return "/models/" + quote(name, safe="")


class GeminiAdapter:
    info = AdapterInfo(
        type="gemini",
        label="Google Gemini",
        capabilities=frozenset({Operation.CHAT, Operation.MESSAGES, Operation.COUNT_TOKENS, Operation.MODELS}),
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

    def classify_error(self, status: int, body: bytes, headers) -> UpstreamError:
        return classify_gemini(status, body, headers)

    def models_request(self, channel: ChannelView, key: ChannelKeyView) -> HttpRequest:
        return HttpRequest("GET", gemini_base(channel.base_url) + "/models?pageSize=1000", self.headers(key))

    def models_response(self, body: bytes) -> list[str]:
        data = orjson.loads(body)
        names = (str(m.get("name") or "") for m in data.get("models", []) if isinstance(m, dict))
        return sorted(n[len("models/"):] if n.startswith("models/") else n for n in names if n)
