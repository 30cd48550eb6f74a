"""The token-billed OpenAI endpoints forwarded as they are: /v1/completions (legacy, streamed or
not), /v1/embeddings and /v1/moderations."""
from __future__ import annotations

import orjson

from relay import tokens
from relay.adapters.base import Adapter, ForwardingAdapter, Operation, Target
from relay.adapters.openai import (
    OpenAIStreamDecoder,
    output_tokens_of_delta,
    usage_from_openai,
)
from relay.attempt import Terms
from relay.endpoints.base import HoldEstimate, choices_of, output_ceiling
from relay.endpoints.forward import Forwarded, ForwardedEndpoint, Outcome
from relay.pricing import Price, Usage
from relay.settings import RelaySettings
from relay.upstream import HttpRequest
from relay.validation.openai import CompletionBody, EmbeddingBody, ModerationBody


def input_tokens(value: object) -> int:
    """A prompt or input given as text, a list of texts, token ids, or lists of token ids."""
    if isinstance(value, str):
        return tokens.text_tokens(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(input_tokens(v) for v in value)
    if isinstance(value, dict):  # moderation inputs: {"type": "text", "text": …} or an image
        return tokens.part_tokens(value)
    return 0


def _is_batch(prompt: object) -> bool:
    """A list of prompts (texts or token-id lists), as opposed to one prompt given as token ids."""
    return isinstance(prompt, list) and len(prompt) > 1 and not all(isinstance(v, int) for v in prompt)


class CompletionsEndpoint(ForwardedEndpoint):
    operation = Operation.COMPLETIONS
    what = "a completion"
    streams = True
    schema = CompletionBody

    def estimate(self, request: Forwarded, price: Price, settings: RelaySettings) -> HoldEstimate:
        prompt = input_tokens(request.payload["prompt"])
        # Every prompt of a batch gets its own answers; `best_of` candidates are all generated and billed.
        prompts = len(request.payload["prompt"]) if _is_batch(request.payload["prompt"]) else 1
        return HoldEstimate(prompt_tokens=2 * prompt, max_output_tokens=output_ceiling(request.payload.get("max_tokens"), price, settings),
                            local_prompt_tokens=prompt, choices=prompts * choices_of(request.payload, "n", "best_of"), cappable=True)

    def cap_output(self, request: Forwarded, limit: int) -> bool:
        asked = request.payload.get("max_tokens")
        if asked is not None and asked <= limit:
            return False
        request.payload["max_tokens"] = limit
        return True

    def upstream_request(self, adapter: Adapter, target: Target, request: Forwarded) -> HttpRequest:
        payload = dict(request.payload, model=target.upstream_model)
        if request.stream:  # billing needs the usage chunk even when the caller did not ask for it
            payload["stream_options"] = dict(payload.get("stream_options") or {}, include_usage=True)
        forwarding: ForwardingAdapter = adapter  # type: ignore[assignment]  # routes here have the capability: OpenAI-shaped
        return forwarding.forward_request(target, self.operation, orjson.dumps(payload))

    def decoder(self, request: Forwarded) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(strip_usage=not request.wants_usage)

    def outcome(self, request: Forwarded, body: bytes, terms: Terms) -> Outcome:
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

    def outcome(self, request: Forwarded, body: bytes, terms: Terms) -> Outcome:
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

    def outcome(self, request: Forwarded, body: bytes, terms: Terms) -> Outcome:
        data = orjson.loads(body)
        if not isinstance(data.get("results"), list):
            raise TypeError("not a moderation result")
        return Outcome(Usage(input=terms.prompt_estimate))
