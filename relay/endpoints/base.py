"""What an endpoint handler provides to the pipeline.

The pipeline does what every billed endpoint shares (auth, checks, hold, routing, the charge); an
endpoint says how to read its request, how big a hold it needs, and how one upstream attempt goes —
returned as a typed result (relay/attempt.py), never settled by the endpoint itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from relay.adapters.base import Adapter, Operation, Target
from relay.attempt import Attempted
from relay.context import RequestContext
from relay.pricing import Price, Usage
from relay.settings import RelaySettings
from relay.upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class HoldEstimate:
    prompt_tokens: int  # generous estimate for the hold
    max_output_tokens: int  # per choice: what the caller asked for, or the model's output cap
    local_prompt_tokens: int  # best estimate, billed when the upstream reports no usage
    units: Usage | None = None  # non-token units at most (images, characters, audio seconds)
    choices: int = 1  # answers generated (`n`, `best_of`, `candidateCount`): output is held for each
    # The endpoint can tell the upstream how many tokens it may write (`cap_output`): the hold may then
    # be smaller than `max_output_tokens` and the upstream is held to what was reserved.
    cappable: bool = False


def output_ceiling(asked: int | None, price: Price, settings: RelaySettings) -> int:
    """Output tokens per choice to hold for: what the caller asked for, never more than the model's
    output cap when the operator set one; without either, the relay's default."""
    cap = price.max_output_tokens
    if asked:
        return min(asked, cap) if cap else asked
    return cap or settings.default_hold_output_tokens


def choices_of(payload: dict[str, Any], *fields: str) -> int:
    """How many answers the request asks for (the largest of `fields`; validation has checked them)."""
    most = 1
    for name in fields:
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > most:
            most = value
    return most


class Endpoint(Protocol):
    operation: Operation
    error_format: str  # "openai" | "anthropic"
    billed: bool  # False: no hold and no charge (attempt gets terms=None)

    # `request` is the endpoint's own request type (what its `parse` returns).
    def parse(self, body: bytes, environ: dict[str, Any]) -> Any: ...

    def model_of(self, request: Any) -> str: ...

    def is_stream(self, request: Any) -> bool: ...

    def estimate(self, request: Any, price: Price, settings: RelaySettings) -> HoldEstimate: ...

    # Endpoints whose estimate is `cappable` also have `cap_output(request, tokens)`: rewrite the
    # request so the upstream writes at most `tokens` per choice (see relay/holds.py).

    # `terms` are the request's `Terms` when `billed`, else None: each endpoint's own signature says
    # which, so the protocol cannot name one type for both. The target carries the attempt's time limits.
    def attempt(self, client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target,
                request: Any, terms: Any) -> Attempted: ...
