"""Passing an upstream SSE stream to the caller as it arrives, and telling how it ended.

`StreamBody` is the WSGI response iterable; the relay's own server asks it to `write_to` the caller's
socket instead, which pumps the upstream from the event loop (relay/pump.py). The server calls
`close()` whether the stream finished or the caller went away. Either way the body calls its one end
hook exactly once with a `StreamEnd` (the upstream's usage, the output delivered, how it ended); the
request's charge (relay/billing.py) is that hook and settles from it. The body settles nothing.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from relay import charges
from relay.context import SSE_HEADERS, RequestContext
from relay.errors import OPENAI, ErrorKind, RelayError, UpstreamError
from relay.pricing import Usage
from relay.pump import Pump, PumpEnd
from relay.settings import Timeouts
from relay.sockets import peer_closed, send_all
from relay.sse import StreamDecoder, StreamEvent
from relay.upstream import UpstreamCallFailed, UpstreamResponse

if TYPE_CHECKING:
    from relay.attempt import Terms

COMPLETE, FAILED, CALLER_GONE = 200, 502, 499  # how a stream ends, as its status


def stream_error(error: UpstreamError) -> RelayError:
    return RelayError(502, "upstream_stream_interrupted", f"The upstream stream failed mid-way: {error.message}")


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a stream ended, told once to its end hook."""

    usage: Usage | None  # the upstream's report, when it came
    delivered: int  # output tokens (counted locally) whose bytes the caller's socket took
    status: int  # COMPLETE (the answer reached the caller whole), FAILED (the upstream broke it), CALLER_GONE
    error_code: str | None = None
    failure: UpstreamError | None = None  # the upstream's fault, which counts against its channel


EndHook = Callable[[StreamEnd], None]


class StreamBody:
    def __init__(self, ctx: RequestContext, decoder: StreamDecoder, response: UpstreamResponse, terms: Terms, timeouts: Timeouts,
                 error_format: str = OPENAI):
        self.ctx = ctx
        self.error_format = error_format  # a failure mid-stream is told in the caller's own event format
        self.decoder = decoder
        self.response = response
        self.terms = terms  # the cost rides in the event that reports the usage
        self.on_end: EndHook | None = None  # the request's charge, once it takes the stream
        self.ended = False
        # The attempt's limits are already cut to what is left of the request's deadline.
        self.deadline = time.monotonic() + timeouts.total
        self.timeouts = timeouts
        self.chunks = response.iter_chunks(timeouts.first_byte, timeouts.idle, self.deadline)
        self.pending: list[tuple[bytes, int]] = []
        self.usage: Usage | None = None
        self.done = False
        self.delivered = 0  # output tokens whose bytes the caller's socket has taken, counted locally
        self.queued = 0  # output tokens handed to the server and not yet known to be written
        self.final_delivered = False  # the upstream's last event reached the caller's socket
        self.deferred: UpstreamError | None = None  # an error that came in the same read as the first output

    def headers(self) -> list[tuple[str, str]]:
        return list(SSE_HEADERS)

    def ends_with(self, hook: EndHook) -> None:
        """`hook` is called once, when the stream ends (finished, broken, or left by the caller)."""
        self.on_end = hook

    def _finish(self, status: int, error_code: str | None = None, failure: UpstreamError | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.on_end is not None:
            self.on_end(StreamEnd(self.usage, self.delivered, status, error_code, failure))

    def _absorb(self, event: StreamEvent) -> None:
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

    def _take(self, event: StreamEvent, out: list[Any]) -> None:
        self._absorb(event)
        if event.raw:
            raw = event.raw
            if (event.usage is not None or event.done) and self.usage is not None:  # the cost rides with the usage
                raw = charges.annotate_event(raw, self.usage, self.terms.price, self.terms.multiplier_bp)
            out.append((raw, event.output_tokens))

    def _drain(self, batch: list[Any]) -> bytes:
        """One write for everything one read brought: fewer syscalls when events come in bursts."""
        if not batch:
            return b""
        data = batch[0][0] if len(batch) == 1 else b"".join(raw for raw, _ in batch)
        self.queued += sum(tokens for _, tokens in batch)
        batch.clear()
        return data

    def _written(self) -> None:
        """Everything handed out so far is on the caller's socket: it counts as delivered."""
        self.delivered += self.queued
        self.queued = 0
        if self.done:
            self.final_delivered = True

    def _step(self, data: bytes) -> tuple[bytes, UpstreamError | None]:
        """What one upstream read gives the caller, and the upstream's error that stopped it, if any."""
        batch: list[Any] = []
        for event in self.decoder.feed(data):
            if event.error is not None:
                return self._drain(batch), event.error
            self._take(event, batch)
        return self._drain(batch), None

    def _end(self, error: UpstreamError | None) -> tuple[bytes, UpstreamError | None]:
        """The last bytes of the body, and the failure still to report once they are on the caller's
        socket. A clean end is reported before the last write (it is charged as the upstream reported
        it, and the caller that reads the end finds it charged); a failure, or a stream that stopped
        before its end, is charged for what was delivered, so it is reported after the last write
        (`_last_written`), whose output then counts."""
        if error is None:
            batch: list[Any] = []
            for event in self.decoder.finish():
                self._take(event, batch)
            out = self._drain(batch)
            if not self.done and self.usage is None:
                early = UpstreamError(ErrorKind.TRANSIENT, 200, "the upstream closed the stream early")
                return out + self._failure_event(early), early
            self._count_the_last_bytes()
            self._finish(COMPLETE)
            return out, None
        return self._failure_event(error), error

    def _last_written(self, failure: UpstreamError | None) -> None:
        """The body's last bytes are on the caller's socket: a failure ends the stream now."""
        self._written()
        if failure is not None:
            # Charged for the input and the output the caller received; the error text is free.
            self._finish(FAILED, stream_error(failure).code, failure)

    def _count_the_last_bytes(self) -> None:
        """Without the upstream's usage a clean end is billed from the relay's own count, which must
        include the last bytes about to be written with it."""
        if self.usage is None:
            self._written()

    def __iter__(self) -> Iterator[bytes]:
        """The body for any WSGI server: a greenlet reads the upstream and yields what it brings. The
        server asks for the next piece once it has written the last one: that is when it counts as
        delivered."""
        yield self._drain(self.pending)
        self._written()
        if self.deferred is not None:
            data, failure = self._end(self.deferred)
            yield data
            self._last_written(failure)
            return
        out, error = b"", None
        try:
            for data in self.chunks:
                out, error = self._step(data)
                if error is None and time.monotonic() > self.deadline:
                    error = UpstreamError(ErrorKind.TIMEOUT, 200, "the stream exceeded its total time limit")
                if error is not None:
                    break
                if out:
                    yield out
                    self._written()
                out = b""
        except UpstreamCallFailed as failed:
            error = failed.error
        data, failure = self._end(error)
        yield out + data
        self._last_written(failure)

    def write_to(self, sock: Any, head: bytes, frame: Callable[[bytes], bytes], last: bytes) -> None:
        """The whole response on the caller's socket, for relay/http_server.py: the head with the
        first output in one write, then the upstream pumped by the event loop (relay/pump.py), then
        the end of the body (`last`, the chunked terminator) with the final bytes. Raises OSError
        when the caller goes away (the server then calls `close`)."""
        if peer_closed(sock):
            # Gone before the first byte (the answer may be here whole already): nothing was delivered.
            raise ConnectionResetError("the caller went away before the first byte")
        first = self._drain(self.pending)
        if self.deferred is not None:
            data, failure = self._end(self.deferred)
            send_all(sock, head + frame(first + data) + last)
            self._last_written(failure)
            return
        send_all(sock, head + frame(first))
        self._written()
        if self.response.exchange.complete:  # the whole body came with the first read
            end = PumpEnd()
        else:
            end = Pump(self.response.exchange, sock, frame, self._step, self.timeouts.idle, self.deadline, self._written).run()
        if end.caller_gone:
            raise ConnectionResetError("the caller went away mid-stream")
        if end.error is None:
            self.response.finish()
        data, failure = self._end(end.error)
        tail = end.tail + data
        send_all(sock, (frame(tail) if tail else b"") + last)
        self._last_written(failure)

    def _failure_event(self, error: UpstreamError) -> bytes:
        """The error event that ends a stream the upstream broke (the upstream is let go at once)."""
        self.response.abort()
        self.ctx.note(step="stream", result="upstream failed mid-stream", kind=error.kind.value, error=error.message[:200])
        return stream_error(error).sse_event(self.ctx.request_id, self.error_format)

    def close(self) -> None:
        """Called by the server at the end, and when the caller disconnects mid-stream."""
        if self.ended:
            return
        self.response.abort()
        if self.final_delivered:
            # The caller had the final event and left before the upstream's last bytes (an SDK
            # stops reading at [DONE]): the answer was delivered whole and is charged as reported.
            self._finish(COMPLETE)
            return
        self.ctx.note(step="stream", result="client disconnected")
        self._finish(CALLER_GONE, "client_disconnected")
