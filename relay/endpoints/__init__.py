"""Inbound endpoints of the relay, by (method, path); Gemini's, whose paths name the model, by
the action after the colon (relay/endpoints/generate.py matches the path)."""
from __future__ import annotations

from relay.endpoints.audio import SpeechEndpoint, TranscriptionEndpoint
from relay.endpoints.base import Endpoint, HoldEstimate
from relay.endpoints.chat import ChatEndpoint
from relay.endpoints.generate import GeminiCountTokensEndpoint, GenerateEndpoint
from relay.endpoints.images import ImagesEndpoint
from relay.endpoints.messages import CountTokensEndpoint, MessagesEndpoint
from relay.endpoints.responses import ResponsesEndpoint
from relay.endpoints.text_ops import CompletionsEndpoint, EmbeddingsEndpoint, ModerationsEndpoint

ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/chat/completions"): ChatEndpoint(),
    ("POST", "/v1/completions"): CompletionsEndpoint(),
    ("POST", "/v1/embeddings"): EmbeddingsEndpoint(),
    ("POST", "/v1/images/generations"): ImagesEndpoint(),
    ("POST", "/v1/audio/speech"): SpeechEndpoint(),
    ("POST", "/v1/audio/transcriptions"): TranscriptionEndpoint("/audio/transcriptions"),
    ("POST", "/v1/audio/translations"): TranscriptionEndpoint("/audio/translations"),
    ("POST", "/v1/moderations"): ModerationsEndpoint(),
    ("POST", "/v1/responses"): ResponsesEndpoint(),
    ("POST", "/v1/messages"): MessagesEndpoint(),
    ("POST", "/v1/messages/count_tokens"): CountTokensEndpoint(),
}

# POST /v1beta/models/{model}:{action} (and /v1/models/{model}:{action})
GEMINI_ACTIONS: dict[str, Endpoint] = {
    "generateContent": GenerateEndpoint(stream=False),
    "streamGenerateContent": GenerateEndpoint(stream=True),
    "countTokens": GeminiCountTokensEndpoint(),
}

__all__ = ["ENDPOINTS", "GEMINI_ACTIONS", "Endpoint", "HoldEstimate"]
