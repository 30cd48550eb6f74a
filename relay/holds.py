"""How much a request reserves, and how much output that reservation pays for.

Prepaid means a request can never spend past its hold. Input is estimated generously before the
call (relay/tokens.py); output is the part the relay can bound exactly, by telling the upstream how
many tokens it may write. So a request whose endpoint can cap its output gets a flexible hold: the
relay asks Redis for the whole worst case (input + the requested or model-maximum output for every
choice) and accepts less, down to the input plus `min_hold_output_tokens` per choice; whatever was
reserved is then turned back into an output budget that the upstream is sent as its `max_tokens`
(or the format's equivalent). Endpoints that cannot cap (images, audio, embeddings) hold their
fixed worst case or are refused.
"""
from __future__ import annotations

from dataclasses import dataclass

from relay import pricing
from relay.endpoints.base import HoldEstimate
from relay.pricing import Price


@dataclass(frozen=True, slots=True)
class HoldSize:
    amount: int  # what the request would like to reserve (its worst case)
    least: int | None  # flexible: the least it can run on; None: exactly `amount`


def size(estimate: HoldEstimate, price: Price, multiplier_bp: int, min_output_tokens: int) -> HoldSize:
    choices = max(estimate.choices, 1)
    amount = pricing.hold_amount(estimate.prompt_tokens, estimate.max_output_tokens * choices, price, multiplier_bp, estimate.units)
    if not estimate.cappable:
        return HoldSize(amount, None)
    least_output = min(estimate.max_output_tokens, max(min_output_tokens, 1))
    least = pricing.hold_amount(estimate.prompt_tokens, least_output * choices, price, multiplier_bp, estimate.units)
    return HoldSize(amount, least if least < amount else None)


def output_budget(estimate: HoldEstimate, reserved: int, price: Price, multiplier_bp: int) -> int:
    """The most output tokens per choice that `reserved` pays for, never more than the request asked.

    `hold_amount` grows with output, so the answer is found by bisection over whole tokens (about
    twenty integer evaluations, only when the hold came back smaller than asked for)."""
    choices = max(estimate.choices, 1)
    ceiling = estimate.max_output_tokens

    def fits(tokens: int) -> bool:
        return pricing.hold_amount(estimate.prompt_tokens, tokens * choices, price, multiplier_bp, estimate.units) <= reserved

    if fits(ceiling):
        return ceiling
    low, high = 0, ceiling  # fits(low) holds for the least accepted hold; fits(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return max(low, 1)
