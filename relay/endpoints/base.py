"""What an endpoint handler provides to the pipeline.

The pipeline does what every billed endpoint shares (auth, checks, hold, routing, settlement); an
endpoint says how to read its request, how big a hold it needs, and how one upstream attempt goes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from relay.adapters.base import Operation, Target
from relay.billing import Settlement
from relay.context import RequestContext, Response
from relay.errors import UpstreamError
from relay.pricing import Price, Usage
from relay.settings import RelaySettings
from relay.upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class HoldEstimate:
    prompt_tokens: int  # generous estimate for the hold
    max_output_tokens: int
    local_prompt_tokens: int  # best estimate, billed when the upstream reports no usage
    units: Usage | None = None  # non-token units at most (images, characters, audio seconds)


class Endpoint(Protocol):
    operation: Operation
    error_format: str  # "openai" | "anthropic"
    billed: bool  # False: no hold and no charge (attempt gets settlement=None)

    def parse(self, body: bytes, environ) -> object: ...

    def model_of(self, request) -> str: ...

    def is_stream(self, request) -> bool: ...

    def estimate(self, request, price: Price, settings: RelaySettings) -> HoldEstimate: ...

    def attempt(self, client: UpstreamClient, settings: RelaySettings, ctx: RequestContext, adapter, target: Target,
                request, settlement: Settlement | None) -> Response | UpstreamError: ...
