"""Writing to gevent sockets without gevent's Python layers when nothing has to wait.

gevent's `sendall` runs a Python loop with a timeout around the OS call even when the kernel takes
every byte at once — the usual case for a request's head, a Redis command or an SSE event. Going
to the OS socket underneath first (always non-blocking under gevent) saves that layer; only a
write the kernel cannot take whole falls back to gevent, which waits cooperatively.
"""
from __future__ import annotations

import socket
from typing import Any

from gevent.socket import socket as GeventSocket


def raw_socket(sock: Any) -> Any:
    """The OS socket under a plain gevent socket; any other socket (TLS above all: its bytes must
    go through the SSL object) is returned as it is."""
    return sock._sock if type(sock) is GeventSocket else sock


def send_all(sock: Any, data: bytes | memoryview) -> None:
    """`sock.sendall(data)`, trying one direct non-blocking send first."""
    if type(sock) is GeventSocket:
        try:
            sent = sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    sock.sendall(data)



def peer_closed(sock: Any) -> bool:
    """Whether the other side has closed the connection, without waiting or consuming anything: a
    caller that hung up reads as end-of-stream; one still there has nothing to read (or its next
    pipelined request). A TLS socket cannot be peeked at and counts as present."""
    raw: socket.socket = raw_socket(sock)
    try:
        blocking = raw.gettimeout()
        raw.settimeout(0.0)
        try:
            return raw.recv(1, socket.MSG_PEEK) == b""
        finally:
            raw.settimeout(blocking)
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    except (OSError, ValueError):
        return False
