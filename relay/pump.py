"""Relaying a streamed response body inside the event loop's own callbacks.

A greenlet relaying a stream pays, for every upstream read, a recv that finds nothing, a timer for
the wait, two greenlet switches and gevent's Python-level sendall: ~30 µs of CPU per event on this
machine. A `Pump` is driven by the loop instead: when the upstream socket turns readable it reads
once, lets `step` turn the bytes into what the caller gets, and sends that at once (~16 µs, mostly
the kernel's; bench/README.md). The request's greenlet sleeps until the body ends, then settles it.

Idle and total time limits are checked by one repeating timer per stream, not re-armed per read.
A caller that reads slowly gets backpressure: the upstream is not read while bytes wait to go out.
A caller that hangs up is noticed when it does, not at the next send.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from gevent.hub import Waiter, get_hub

from relay.errors import ErrorKind, UpstreamError
from relay.sockets import raw_socket
from relay.http_client import Exchange
from relay.upstream import TRANSPORT_ERRORS, failure_of

log = logging.getLogger(__name__)

READ, WRITE = 1, 2
TICK_SECONDS = 1.0
STREAM_PRIORITY = -1  # libev's default is 0


@dataclass(slots=True)
class PumpEnd:
    """How the pumping stopped. `tail` is output of the last read that was not sent: it goes out with
    whatever the request's greenlet adds to end the body (one write)."""

    tail: bytes = b""
    error: UpstreamError | None = None
    caller_gone: bool = False


class Pump:
    def __init__(self, source: Exchange, sock: Any, frame: Callable[[bytes], bytes], step: Callable[[bytes], tuple[bytes, UpstreamError | None]],
                 idle: float, deadline: float, written: Callable[[], None] = lambda: None):
        """`written()` is called each time everything `step` gave has been taken by the caller's socket."""
        loop = get_hub().loop
        self.source, self.sock, self.frame, self.step, self.written = source, sock, frame, step, written
        self.out = raw_socket(sock)  # sends that never wait skip gevent's layer (relay/sockets.py)
        self.idle, self.deadline = idle, deadline
        # Below the default priority: in each turn of the loop, requests on their way to a first
        # token (new requests, Redis replies, upstream heads) go before the events of running streams.
        self.reader = loop.io(source.fileno(), READ, priority=STREAM_PRIORITY)
        self.writer = loop.io(sock.fileno(), WRITE, priority=STREAM_PRIORITY)
        # The caller's side turns readable only when it hangs up (or sends its next request early):
        # a hang-up ends the stream at once, not at the next event the upstream sends, which may be
        # a minute away while a reasoning model thinks — and is paid for meanwhile.
        self.hangup = loop.io(sock.fileno(), READ, priority=STREAM_PRIORITY)
        tick = min(TICK_SECONDS, idle)
        self.timer = loop.timer(tick, tick)
        self.loop = loop
        self.waiter = Waiter()
        self.backlog: bytes | None = None
        self.last = time.monotonic()
        self.ended = False

    def run(self) -> PumpEnd:
        """Pump until the body ends, the upstream fails or the caller goes away."""
        saved = self.sock.gettimeout()
        self.sock.settimeout(0.0)
        try:
            if self.source.start_nonblocking():
                # TLS may hold decrypted bytes that no readiness event will announce: look once now.
                self.loop.run_callback(self._readable)
            self.reader.start(self._readable)
            self.hangup.start(self._caller_readable)
            self.timer.start(self._tick)
            end: PumpEnd = self.waiter.get()
            return end
        finally:
            self.ended = True
            for watcher in (self.reader, self.writer, self.hangup, self.timer):
                watcher.stop()
                watcher.close()
            self.sock.settimeout(saved)

    # --- loop callbacks: they must never raise, the loop would only print it ---------------------
    def _readable(self) -> None:
        if self.ended:
            return
        try:
            data = self.source.read_nowait()
            if data is None:
                return
            self.last = time.monotonic()
            out, error = self.step(data)
        except TRANSPORT_ERRORS as exc:
            self._end(PumpEnd(error=failure_of(exc).error))
            return
        except Exception:  # a bug in a decoder fails this request, not the loop
            log.exception("stream pump step failed")
            self._end(PumpEnd(error=UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "the stream could not be relayed")))
            return
        if error is not None or self.source.complete:
            self._end(PumpEnd(tail=out, error=error))
        elif out:
            self._send(self.frame(out))

    def _send(self, data: bytes) -> None:
        try:
            sent = self.out.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end(PumpEnd(caller_gone=True))
            return
        if sent == len(data):
            self.backlog = None
            self.written()
            return
        # The caller's socket is full: stop reading the upstream until it has taken this.
        self.backlog = data[sent:]
        self.reader.stop()
        self.writer.start(self._writable)

    def _writable(self) -> None:
        if self.ended or self.backlog is None:
            return
        self.last = time.monotonic()
        self._send(self.backlog)
        if self.backlog is None and not self.ended:
            self.writer.stop()
            self.reader.start(self._readable)

    def _caller_readable(self) -> None:
        if self.ended:
            return
        try:
            early = self.out.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            self._end(PumpEnd(caller_gone=True))
            return
        if not early:  # end of stream: the caller closed its side
            self._end(PumpEnd(caller_gone=True))
        else:  # a pipelined next request: the server reads it after this body
            self.hangup.stop()

    def _tick(self) -> None:
        if self.ended:
            return
        now = time.monotonic()
        if now > self.deadline:
            self._end(PumpEnd(error=UpstreamError(ErrorKind.TIMEOUT, 200, "the stream exceeded its total time limit")))
        elif now - self.last > self.idle:
            if self.backlog is not None:  # the caller stopped reading
                self._end(PumpEnd(caller_gone=True))
            else:
                self._end(PumpEnd(error=failure_of(socket.timeout()).error))

    def _end(self, end: PumpEnd) -> None:
        if self.ended:
            return
        self.ended = True
        self.reader.stop()
        self.writer.stop()
        self.hangup.stop()
        self.timer.stop()
        self.waiter.switch(end)
