"""Inbound endpoints of the relay, by (method, path)."""
from __future__ import annotations

from relay.endpoints.audio import SpeechEndpoint, TranscriptionEndpoint
from relay.endpoints.base import Endpoint, HoldEstimate
from relay.endpoints.chat import ChatEndpoint
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

__all__ = ["ENDPOINTS", "Endpoint", "HoldEstimate"]
