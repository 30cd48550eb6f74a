"""Passing an upstream SSE stream to the caller as it arrives, and settling when it ends.

`StreamBody` is the WSGI response iterable. The server calls `close()` whether the stream finished
or the caller went away; either way the request is settled exactly once, for what was delivered.
"""
from __future__ import annotations

import time

from relay.billing import Settlement
from relay.context import SSE_HEADERS, RequestContext
from relay.errors import OPENAI, ErrorKind, RelayError, UpstreamError
from relay.settings import Timeouts
from relay.upstream import UpstreamCallFailed, UpstreamResponse


def stream_error(error: UpstreamError) -> RelayError:
    return RelayError(502, "upstream_stream_interrupted", f"The upstream stream failed mid-way: {error.message}")


class StreamBody:
    def __init__(self, ctx: RequestContext, decoder, response: UpstreamResponse, settlement: Settlement, timeouts: Timeouts,
                 error_format: str = OPENAI):
        self.ctx = ctx
        self.error_format = error_format  # a failure mid-stream is told in the caller's own event format
        self.decoder = decoder
        self.response = response
        self.settlement = settlement
        # The attempt's limits are already cut to what is left of the request's deadline.
        self.deadline = time.monotonic() + timeouts.total
        self.chunks = response.iter_chunks(timeouts.first_byte, timeouts.idle, self.deadline)
        self.pending: list[tuple[bytes, int]] = []
        self.usage = None
        self.done = False
        self.delivered = 0  # output tokens the caller has received, counted locally
        self.deferred: UpstreamError | None = None  # an error that came in the same read as the first output

    def headers(self) -> list[tuple[str, str]]:
        return list(SSE_HEADERS)

    def _absorb(self, event) -> None:
        if event.usage is not None:
            self.usage = event.usage
        if event.done:
            self.done = True

    def prime(self) -> UpstreamError | None:
        """Read until there is something for the caller. A failure before that may be retried.

        An error that arrives together with output (one read can carry both) is kept for after that
        output: the upstream did answer, so the caller gets what it produced and then the error.
        """
        try:
            for data in self.chunks:
                for event in self.decoder.feed(data):
                    if event.error is not None:
                        if self.pending:
                            self.deferred = event.error
                            break
                        self.response.abort()
                        return event.error
                    self._take(event, self.pending)
                if self.pending:
                    self.ctx.ttft_ms = self.ctx.elapsed_ms()
                    return None
        except UpstreamCallFailed as failed:
            return failed.error
        for event in self.decoder.finish():
            self._take(event, self.pending)
        if self.pending:
            self.ctx.ttft_ms = self.ctx.elapsed_ms()
            return None
        return UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "the upstream stream ended without any output")

    def _take(self, event, out: list) -> None:
        self._absorb(event)
        if event.raw:
            out.append((event.raw, event.output_tokens))

    def _send(self, batch: list):
        """One write for everything one read brought: fewer syscalls when events come in bursts."""
        if batch:
            yield batch[0][0] if len(batch) == 1 else b"".join(raw for raw, _ in batch)
            self.delivered += sum(tokens for _, tokens in batch)
            batch.clear()

    def __iter__(self):
        yield from self._send(self.pending)
        if self.deferred is not None:
            yield from self._fail(self.deferred)
            return
        batch: list = []
        try:
            for data in self.chunks:
                for event in self.decoder.feed(data):
                    if event.error is not None:
                        yield from self._send(batch)
                        yield from self._fail(event.error)
                        return
                    self._take(event, batch)
                yield from self._send(batch)
                if time.monotonic() > self.deadline:
                    yield from self._fail(UpstreamError(ErrorKind.TIMEOUT, 200, "the stream exceeded its total time limit"))
                    return
            for event in self.decoder.finish():
                self._take(event, batch)
            yield from self._send(batch)
        except UpstreamCallFailed as failed:
            yield from self._fail(failed.error)
            return
        if not self.done and self.usage is None:
            yield from self._fail(UpstreamError(ErrorKind.TRANSIENT, 200, "the upstream closed the stream early"))
            return
        self.settlement.succeed(self.usage, self.delivered)

    def _fail(self, error: UpstreamError):
        self.response.abort()
        relay_error = stream_error(error)
        self.ctx.note(step="stream", result="upstream failed mid-stream", kind=error.kind.value, error=error.message[:200])
        # Charged for the input and the output the caller received; the error text is free.
        self.settlement.partial(self.delivered, 502, relay_error.code, failure=error)
        yield relay_error.sse_event(self.ctx.request_id, self.error_format)

    def close(self) -> None:
        """Called by the server at the end, and when the caller disconnects mid-stream."""
        if not self.settlement.settled:
            self.response.abort()
            self.ctx.note(step="stream", result="client disconnected")
            self.settlement.partial(self.delivered, 499, "client_disconnected")
