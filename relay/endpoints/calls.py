"""The steps one upstream attempt shares across endpoints: send, read, turn failures into
`UpstreamError`s the router can judge, and hand a stream to `StreamBody`. An attempt returns what
happened (relay/attempt.py); it settles nothing."""
from __future__ import annotations

from collections.abc import Callable

from relay.adapters.base import Adapter, Target
from relay.attempt import Answer, Attempted, Streamed, Terms
from relay.context import RequestContext, json_response
from relay.errors import OPENAI, ErrorKind, UpstreamError
from relay.pricing import Usage
from relay.sse import StreamDecoder
from relay.streaming import StreamBody
from relay.upstream import HttpRequest, UpstreamCallFailed, UpstreamClient, UpstreamResponse


def send(client: UpstreamClient, adapter: Adapter, target: Target, request: HttpRequest) -> UpstreamResponse | UpstreamError:
    """The upstream's 200 response with its body unread, or what went wrong, classified by the adapter.

    Time limits are the target's (its channel's, cut to the request's deadline by the router).
    """
    try:
        response = client.send(request, target.timeouts)
    except UpstreamCallFailed as failed:
        return failed.error
    if response.status == 200:
        return response
    body = read(response)
    if isinstance(body, UpstreamError):
        return body
    return adapter.classify_error(response.status, body, response.headers)


def read(response: UpstreamResponse) -> bytes | UpstreamError:
    try:
        return response.read_all()
    except UpstreamCallFailed as failed:
        return failed.error


def invalid(what: str) -> UpstreamError:
    return UpstreamError(ErrorKind.INVALID_RESPONSE, 200, f"the upstream's response is not {what}")


def stream(ctx: RequestContext, target: Target, decoder: StreamDecoder, response: UpstreamResponse, terms: Terms,
           error_format: str = OPENAI) -> Streamed | UpstreamError:
    """Start relaying an SSE stream; a failure before the first event is still retryable."""
    body = StreamBody(ctx, decoder, response, terms, target.timeouts, error_format)
    error = body.prime()
    if error is not None:
        return error
    return Streamed(body, body.headers())


PARSE_FAILURES = (ValueError, KeyError, TypeError, AttributeError)
# (the body for the caller, the upstream's usage, the output tokens counted locally)
Parsed = tuple[bytes, Usage | None, int]


def answer(client: UpstreamClient, ctx: RequestContext, adapter: Adapter, target: Target, request: HttpRequest, terms: Terms, *,
           decoder: StreamDecoder | None = None, parse: Callable[[bytes], Parsed], what: str, error_format: str = OPENAI) -> Attempted:
    """One upstream attempt end to end: send; then stream through `decoder` when given, else read the
    body and `parse` it into (body for the caller, usage, locally counted output tokens)."""
    response = send(client, adapter, target, request)
    if isinstance(response, UpstreamError):
        return response
    if decoder is not None:
        return stream(ctx, target, decoder, response, terms, error_format)
    body = read(response)
    if isinstance(body, UpstreamError):
        return body
    try:
        out, usage, output_tokens = parse(body)
    except PARSE_FAILURES:
        return invalid(what)
    return Answer(json_response(200, out), usage, output_tokens)
