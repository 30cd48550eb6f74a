"""Inbound endpoints of the relay, by (method, path)."""
from __future__ import annotations

from relay.endpoints.base import Endpoint, HoldEstimate
from relay.endpoints.chat import ChatEndpoint

ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/chat/completions"): ChatEndpoint(),
}

__all__ = ["ENDPOINTS", "Endpoint", "HoldEstimate"]
