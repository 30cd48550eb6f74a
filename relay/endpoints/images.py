"""POST /v1/images/generations, forwarded to OpenAI-shaped channels.

A model priced per image is billed for the images actually returned, at the price of the size
and quality the request asked for (design: `Price.image_rate`). A model without image prices
(gpt-image models, which OpenAI bills by tokens) is billed from the usage the upstream reports.
"""
from __future__ import annotations

from typing import Any

import orjson

from relay import tokens
from relay.adapters.base import Operation
from relay.adapters.openai import usage_from_openai
from relay.attempt import Terms
from relay.endpoints.base import HoldEstimate
from relay.endpoints.forward import Forwarded, ForwardedEndpoint, Outcome
from relay.pricing import Price, Usage
from relay.settings import RelaySettings
from relay.validation.openai import ImageBody

UNSPECIFIED = "auto"  # the size/quality tier a request that names none is priced at


def tier(payload: dict[str, Any]) -> str:
    return f"{payload.get('size') or UNSPECIFIED}/{payload.get('quality') or UNSPECIFIED}"


class ImagesEndpoint(ForwardedEndpoint):
    operation = Operation.IMAGES
    what = "an image generation result"
    schema = ImageBody

    def estimate(self, request: Forwarded, price: Price, settings: RelaySettings) -> HoldEstimate:
        n = request.payload.get("n") or 1
        prompt = tokens.text_tokens(request.payload["prompt"])
        if price.prices_images:
            return HoldEstimate(0, 0, 0, units=Usage(images=n, image_tier=tier(request.payload)))
        out = price.max_output_tokens or settings.default_hold_output_tokens
        return HoldEstimate(prompt_tokens=2 * prompt, max_output_tokens=n * out, local_prompt_tokens=prompt)

    def outcome(self, request: Forwarded, body: bytes, terms: Terms) -> Outcome:
        data = orjson.loads(body)
        images = data.get("data")
        if not isinstance(images, list):
            raise TypeError("not an image generation result")
        if terms.price.prices_images:
            return Outcome(Usage(images=len(images), image_tier=tier(request.payload)))
        return Outcome(usage_from_openai(data.get("usage")) or Usage(input=terms.prompt_estimate))
