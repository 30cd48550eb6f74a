"""Name resolution for tests, so no test depends on the machine's DNS.

`resolve` answers every name with 127.0.0.1 (a connection fails at once, as a name nobody serves
would), except names under `.invalid`, which never exist (RFC 6761); address literals, including
the numeric forms inet_aton reads, are parsed as the system parses them. `names` builds a resolver
with fixed answers, for tests that need a name to point somewhere in particular.
"""
from __future__ import annotations

import socket


def _answer(address: str, port, kind) -> list[tuple]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sockaddr = (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
    return [(family, kind or socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]


def _nonexistent(host: str) -> socket.gaierror:
    return socket.gaierror(socket.EAI_NONAME, f"{host}: Name or service not known")


def resolve(host, port, family=0, kind=0, proto=0, flags=0):
    try:
        return socket.getaddrinfo(host, port, family, kind, proto, flags | socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass
    name = host.rstrip(".").lower()
    if name == "invalid" or name.endswith(".invalid"):
        raise _nonexistent(host)
    return _answer("127.0.0.1", port, kind)


def names(answers: dict[str, str]):
    """A resolver that knows only `answers` (name → address); change the dict to move a name."""
    def lookup(host, port, family=0, kind=0, proto=0, flags=0):
        try:
            return socket.getaddrinfo(host, port, family, kind, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        address = answers.get(host.rstrip(".").lower())
        if address is None:
            raise _nonexistent(host)
        return _answer(address, port, kind)
    return lookup
