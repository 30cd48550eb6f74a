"""The steps one upstream attempt shares across endpoints: send, read, turn failures into
`UpstreamError`s the router can judge, and hand a stream to `StreamBody`."""
from __future__ import annotations

from collections.abc import Callable

from relay.adapters.base import Adapter
from relay.billing import Settlement
from relay.context import RequestContext, Response, json_response
from relay.errors import OPENAI, ErrorKind, UpstreamError
from relay.pricing import Usage
from relay.settings import RelaySettings
from relay.sse import StreamDecoder
from relay.streaming import StreamBody
from relay.upstream import HttpRequest, UpstreamCallFailed, UpstreamClient, UpstreamResponse


def send(client: UpstreamClient, ctx: RequestContext, settings: RelaySettings, adapter: Adapter, request: HttpRequest) -> UpstreamResponse | UpstreamError:
    """The upstream's 200 response with its body unread, or what went wrong, classified by the adapter.

    Time limits are the attempt's channel's (set by the router on `ctx`), else the relay's defaults.
    """
    try:
        response = client.send(request, ctx.timeouts or settings.timeouts)
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


def stream(ctx: RequestContext, settings: RelaySettings, decoder: StreamDecoder, response: UpstreamResponse, settlement: Settlement,
           error_format: str = OPENAI) -> Response | UpstreamError:
    """Start relaying an SSE stream; a failure before the first event is still retryable."""
    body = StreamBody(ctx, decoder, response, settlement, ctx.timeouts or settings.timeouts, error_format)
    error = body.prime()
    if error is not None:
        return error
    return Response(200, body.headers(), body)


PARSE_FAILURES = (ValueError, KeyError, TypeError, AttributeError)
# (the body for the caller, the upstream's usage, the output tokens counted locally)
Parsed = tuple[bytes, Usage | None, int]


def answer(client: UpstreamClient, ctx: RequestContext, settings: RelaySettings, adapter: Adapter, request: HttpRequest,
           settlement: Settlement, *, decoder: StreamDecoder | None = None, parse: Callable[[bytes], Parsed], what: str,
           error_format: str = OPENAI) -> Response | UpstreamError:
    """One upstream attempt end to end: send; then stream through `decoder` when given, else read the
    body, `parse` it into (body for the caller, usage, locally counted output tokens) and settle."""
    response = send(client, ctx, settings, adapter, request)
    if isinstance(response, UpstreamError):
        return response
    if decoder is not None:
        return stream(ctx, settings, decoder, response, settlement, error_format)
    body = read(response)
    if isinstance(body, UpstreamError):
        return body
    try:
        out, usage, output_tokens = parse(body)
    except PARSE_FAILURES:
        return invalid(what)
    settlement.succeed(usage, output_tokens, status=200)
    return json_response(200, out)

