"""Writing to gevent sockets without gevent's Python layers when nothing has to wait.

gevent's `sendall` runs a Python loop with a timeout around the OS call even when the kernel takes
every byte at once — the usual case for a request's head, a Redis command or an SSE event. Going
to the OS socket underneath first (always non-blocking under gevent) saves that layer; only a
write the kernel cannot take whole falls back to gevent, which waits cooperatively.
"""
from __future__ import annotations

from gevent.socket import socket as GeventSocket


def raw_socket(sock):
    """The OS socket under a plain gevent socket; any other socket (TLS above all: its bytes must
    go through the SSL object) is returned as it is."""
    return sock._sock if type(sock) is GeventSocket else sock


def send_all(sock, data: bytes) -> None:
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
