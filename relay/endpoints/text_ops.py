"""The token-billed OpenAI endpoints forwarded as they are: /v1/completions (legacy, streamed or
not), /v1/embeddings and /v1/moderations."""
from __future__ import annotations

import orjson

from relay import tokens
from relay.adapters.base import Operation, Target
from relay.adapters.openai import (
    OpenAIStreamDecoder,
    output_tokens_of_delta,
    usage_from_openai,
)
from relay.billing import Settlement
from relay.endpoints.base import HoldEstimate
from relay.endpoints.forward import Forwarded, ForwardedEndpoint, Outcome
from relay.pricing import Price, Usage
from relay.settings import RelaySettings
from relay.upstream import HttpRequest
from relay.validation.openai import CompletionBody, EmbeddingBody, ModerationBody


def input_tokens(value) -> int:
    """A prompt or input given as text, a list of texts, token ids, or lists of token ids."""
    if isinstance(value, str):
        return tokens.text_tokens(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(input_tokens(v) for v in value)
    if isinstance(value, dict):  # moderation inputs: {"type": "text", "text": …} or an image
        if isinstance(value.get("text"), str):
            return tokens.text_tokens(value["text"])
        return tokens.IMAGE_TOKENS if value.get("type") == "image_url" else 0
    return 0


class CompletionsEndpoint(ForwardedEndpoint):
    operation = Operation.COMPLETIONS
    what = "a completion"
    streams = True
    schema = CompletionBody

    def estimate(self, request: Forwarded, price: Price, settings: RelaySettings) -> HoldEstimate:
        prompt = input_tokens(request.payload["prompt"])
        choices = max(int(request.payload.get("n") or 1), int(request.payload.get("best_of") or 1))
        out = request.payload.get("max_tokens") or price.max_output_tokens or settings.default_hold_output_tokens
        return HoldEstimate(prompt_tokens=2 * prompt, max_output_tokens=out * choices, local_prompt_tokens=prompt)

    def upstream_request(self, adapter, target: Target, request: Forwarded) -> HttpRequest:
        payload = dict(request.payload, model=target.upstream_model)
        if request.stream:  # billing needs the usage chunk even when the caller did not ask for it
            payload["stream_options"] = dict(payload.get("stream_options") or {}, include_usage=True)
        return adapter.forward_request(target, self.operation, orjson.dumps(payload))

    def decoder(self, request: Forwarded) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(strip_usage=not request.wants_usage)

    def outcome(self, request: Forwarded, body: bytes, settlement: Settlement) -> Outcome:
        data = orjson.loads(body)
        if not isinstance(data.get("choices"), list):
            raise TypeError("not a completion")
        return Outcome(usage_from_openai(data.get("usage")), output_tokens_of_delta(data["choices"]))


class InputOnlyEndpoint(ForwardedEndpoint):
    """Endpoints billed on their `input` alone (no output tokens)."""

    def estimate(self, request: Forwarded, price: Price, settings: RelaySettings) -> HoldEstimate:
        prompt = input_tokens(request.payload["input"])
        return HoldEstimate(prompt_tokens=2 * prompt, max_output_tokens=0, local_prompt_tokens=prompt)


class EmbeddingsEndpoint(InputOnlyEndpoint):
    operation = Operation.EMBEDDINGS
    what = "an embedding list"
    schema = EmbeddingBody

    def outcome(self, request: Forwarded, body: bytes, settlement: Settlement) -> Outcome:
        data = orjson.loads(body)
        if not isinstance(data.get("data"), list):
            raise TypeError("not an embedding list")
        usage = data.get("usage")
        return Outcome(Usage(input=int(usage.get("prompt_tokens") or 0)) if isinstance(usage, dict) else None)


class ModerationsEndpoint(InputOnlyEndpoint):
    """OpenAI reports no usage for moderations: the input is billed from the local count."""

    operation = Operation.MODERATIONS
    what = "a moderation result"
    schema = ModerationBody
    default_model = "omni-moderation-latest"

    def outcome(self, request: Forwarded, body: bytes, settlement: Settlement) -> Outcome:
        data = orjson.loads(body)
        if not isinstance(data.get("results"), list):
            raise TypeError("not a moderation result")
        return Outcome(Usage(input=settlement.prompt_estimate))
