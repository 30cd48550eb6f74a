"""Provider adapters, one module per channel type, looked up by type in one registry.

A leaf package: adapters import only relay's pure modules, so the control plane may use them too
(for "fetch models" and channel tests).
"""
from __future__ import annotations

from relay.adapters.anthropic import AnthropicAdapter
from relay.adapters.azure import AzureAdapter
from relay.adapters.base import Adapter, AdapterInfo, ChatRequest, ChatResult, MessagesRequest, Operation, StreamEvent, Target
from relay.adapters.gemini import GeminiAdapter
from relay.adapters.openai import OpenAIAdapter

REGISTRY: dict[str, Adapter] = {
    adapter.info.type: adapter
    for adapter in (OpenAIAdapter(), AzureAdapter(), AnthropicAdapter(), GeminiAdapter())
}

CHANNEL_TYPES: tuple[str, ...] = tuple(REGISTRY)


def adapter_for(channel_type: str) -> Adapter:
    try:
        return REGISTRY[channel_type]
    except KeyError:
        raise LookupError(f"no adapter for channel type {channel_type!r}") from None


__all__ = [
    "Adapter",
    "AdapterInfo",
    "CHANNEL_TYPES",
    "ChatRequest",
    "ChatResult",
    "MessagesRequest",
    "Operation",
    "REGISTRY",
    "StreamEvent",
    "Target",
    "adapter_for",
]
