"""The OpenAI endpoints the relay forwards as they are to OpenAI-shaped channels (completions,
embeddings, images, audio, moderations, responses): the request body goes up with the model name
mapped, the answer comes back untouched, and each endpoint says how to size the hold and what
the answer's usage is."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from relay.adapters.base import Adapter, ForwardingAdapter, Operation, Target
from relay.attempt import Answer, Attempted, Terms
from relay.context import RequestContext, Response
from relay.endpoints import calls
from relay.endpoints.parsing import json_object
from relay.errors import OPENAI, RelayError, UpstreamError
from relay.multipart import Form
from relay.pricing import Usage
from relay.sse import StreamDecoder
from relay.upstream import HttpRequest, UpstreamClient
from relay.validation import check
from relay.validation.openai import Body


@dataclass(slots=True)
class Forwarded:
    model: str
    payload: dict[str, Any]
    stream: bool = False
    wants_usage: bool = False
    upload: Form | None = None  # a parsed multipart form (transcriptions)


@dataclass(slots=True)
class Outcome:
    """What an answer is billed for."""

    usage: Usage | None
    output_tokens: int = 0  # local count, for when usage is None


class ForwardedEndpoint:
    operation: Operation
    schema: type[Body]  # the request body's shape (relay/validation/openai.py)
    error_format = OPENAI
    billed = True
    what = "an answer"  # for the 502 when the upstream's answer cannot be read
    default_model: str | None = None
    path: str | None = None  # overrides the adapter's path for the operation
    streams = False  # the endpoint has a streamed form the relay relays

    def parse(self, body: bytes, environ: dict[str, Any]) -> Forwarded:
        payload = json_object(body)
        spec = check(payload, self.schema)
        stream = spec.stream is True
        if stream and not self.streams:
            raise RelayError(501, "stream_not_supported", "This endpoint is not available streamed through this gateway; "
                             "send the request without 'stream'.", param="stream")
        options = payload.get("stream_options")
        wants_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        # A body's model is required, except where the endpoint names a default_model.
        return Forwarded(model=spec.model or self.default_model, payload=payload, stream=stream,  # type: ignore[arg-type]  # see above
                         wants_usage=wants_usage)

    def model_of(self, request: Forwarded) -> str:
        return request.model

    def is_stream(self, request: Forwarded) -> bool:
        return request.stream

    def upstream_request(self, adapter: Adapter, target: Target, request: Forwarded) -> HttpRequest:
        payload = dict(request.payload, model=target.upstream_model)
        forwarding: ForwardingAdapter = adapter  # type: ignore[assignment]  # routes here have the capability: OpenAI-shaped
        return forwarding.forward_request(target, self.operation, orjson.dumps(payload), "application/json", self.path)

    def outcome(self, request: Forwarded, body: bytes, terms: Terms) -> Outcome:
        raise NotImplementedError

    def decoder(self, request: Forwarded) -> StreamDecoder:
        raise NotImplementedError

    def attempt(self, client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target,
                request: Forwarded, terms: Terms) -> Attempted:
        response = calls.send(client, adapter, target, self.upstream_request(adapter, target, request))
        if isinstance(response, UpstreamError):
            return response
        if request.stream:
            return calls.stream(ctx, target, self.decoder(request), response, terms)
        body = calls.read(response)
        if isinstance(body, UpstreamError):
            return body
        try:
            outcome = self.outcome(request, body, terms)
        except (ValueError, KeyError, TypeError, AttributeError):
            return calls.invalid(self.what)
        content_type = response.headers.get("content-type") or "application/json"
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        answer = Response(200, headers, [body])  # type: ignore[arg-type]  # one Content-Type (a repeated one would be a list)
        return Answer(answer, outcome.usage, outcome.output_tokens)
