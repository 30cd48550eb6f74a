"""Server-sent events: splitting a byte stream into events without copying more than needed, and
`StreamEvent`, what a stream decoder makes of one upstream event."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

from relay.errors import UpstreamError
from relay.pricing import Usage


@dataclass(slots=True)
class StreamEvent:
    """One SSE event from the upstream, decoded.

    `raw` is what goes to the caller (None: send nothing); `chunk` is the decoded
    chat.completion.chunk for whoever needs to look inside (never re-encoded unless changed).
    """

    raw: bytes | None
    chunk: dict[str, Any] | None = None
    usage: Usage | None = None
    output_tokens: int = 0  # local count of the text this event delivers
    done: bool = False
    error: UpstreamError | None = None


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> Iterable[StreamEvent]: ...

    def finish(self) -> Iterable[StreamEvent]: ...


class SSEBuffer:
    """Accumulates bytes and yields complete events (the bytes before each blank line)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self._buf = events.pop()
        return [event for event in events if event]

    def rest(self) -> bytes:
        """Whatever arrived after the last complete event (a stream cut mid-event)."""
        rest, self._buf = self._buf.strip(), b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """The data of an event (data lines joined by newlines), or None for a comment-only event."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].lstrip(b" ")
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


_SSE_FIELDS = (b"data", b"event", b"id", b"retry")
NOT_SSE = "the upstream's stream is not server-sent events"


def is_sse(event: bytes) -> bool:
    """Whether an event without data is still SSE: comments and `event`/`id`/`retry` lines. An HTML
    page or other junk under a `text/event-stream` header is not, and must not reach the caller."""
    for line in event.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name = line.partition(b":")[0]
        if name not in _SSE_FIELDS:
            return False
    return True


def event_name(event: bytes) -> bytes | None:
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip()
    return None


class EventDecoder:
    """The base of every stream decoder: split the SSE byte stream, decode each event.

    Subclasses implement `_decode(event) -> StreamEvent` (the event's bytes, blank line excluded).
    """

    def __init__(self) -> None:
        self.sse = SSEBuffer()

    def feed(self, data: bytes) -> list[StreamEvent]:
        decode = self._decode
        return [decode(event) for event in self.sse.feed(data)]

    def finish(self) -> Iterator[StreamEvent]:
        rest = self.sse.rest()
        if rest:
            yield self._decode(rest)

    def _decode(self, event: bytes) -> StreamEvent:
        raise NotImplementedError

