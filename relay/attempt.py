"""What one upstream attempt gives back, and what the router hands the request's charge.

An attempt returns a value instead of settling anything itself: a whole `Answer` (its response and
usage), a `Streamed` handle (a stream primed with its first output, whose body reports its one end),
or the `UpstreamError` the router judges. When the router gives up it returns `Unanswered`: the
caller's error, and the last failure when no script has recorded it in passive health yet. Only the
request's charge (relay/billing.py) turns these into a settle.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from relay.context import Response
from relay.errors import RelayError, UpstreamError
from relay.health import Outcome
from relay.pricing import Price, Usage

if TYPE_CHECKING:
    from relay.streaming import StreamBody


@dataclass(frozen=True, slots=True)
class Terms:
    """What a billed request is priced at, as far as an attempt needs it: the price (caps, units),
    the group's multiplier (a stream's cost in its usage event) and the local prompt estimate (the
    input billed when an upstream reports none)."""

    price: Price
    multiplier_bp: int
    prompt_estimate: int
    # A request with fallback models: each model's price, for the attempt and the charge of the model that answers.
    prices: tuple[Price, ...] = ()

    def at(self, model: str | None) -> Terms:
        """These terms for the model an attempt is for (`price` when it is no fallback)."""
        if not self.prices or model is None or model == self.price.model:
            return self
        for price in self.prices:
            if price.model == model:
                return replace(self, price=price, prices=())
        return self


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: the caller's response, and what it is billed for."""

    response: Response
    usage: Usage | None  # as the upstream reported it; None: bill the local count
    output_tokens: int = 0  # output counted locally, for when usage is None

    @property
    def status(self) -> int:
        return self.response.status


@dataclass(frozen=True, slots=True)
class Streamed:
    """A stream whose first output is in hand; it is billed when its body ends."""

    body: StreamBody
    headers: list[tuple[str, str]]
    status = 200

    @property
    def response(self) -> Response:
        return Response(200, self.headers, self.body)


@dataclass(frozen=True, slots=True)
class Unanswered:
    """The router gave up before anything reached the caller."""

    error: RelayError
    unrecorded: Outcome | None  # the last failure, for the settle script to record in health


# One attempt's result, and the router's.
Attempted = Answer | Streamed | UpstreamError
Routed = Answer | Streamed | Unanswered
