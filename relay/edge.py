"""What the relay's HTTP server allows a client: how long a request may take to arrive, how large
its head may be, how many connections one address and everyone together may hold open.

The defaults follow what nginx and Kestrel do for the same attacks (slowloris, header floods,
connection floods), tuned for API clients: a request head arrives in one packet, a body streams at
network speed, and a real client keeps a handful of connections, not hundreds.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass

from relay.client_ip import Network, parse_address


@dataclass(frozen=True)
class EdgeLimits:
    # A request's head (request line and headers) must arrive whole within this many seconds of its
    # first byte (of the connection's accept, for its first request), or the connection closes.
    header_timeout: float = 10.0
    # A keep-alive connection may wait this long for its next request.
    idle_timeout: float = 75.0
    # While a body arrives: the longest gap between two reads, and the slowest average rate
    # (bytes/s) allowed once the grace period after the head has passed.
    body_read_timeout: float = 30.0
    body_min_rate: int = 4096
    body_rate_grace: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    # Bodies up to this size are read before the app runs; larger ones (and chunked ones, and those
    # sent after `Expect: 100-continue`) only when the app asks, after it has checked the caller.
    buffer_body_bytes: int = 64 * 1024
    # 0: half the process's open-file limit (every proxied request may also hold an upstream socket).
    max_connections: int = 0
    # 0 turns the per-address cap off; trusted proxies are only counted in the total.
    max_connections_per_ip: int = 1000

    def connection_cap(self) -> int:
        if self.max_connections > 0:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(64, soft // 2) if soft != resource.RLIM_INFINITY else 100_000


class ConnectionCaps:
    """Open connections, in total and per peer address; `admit` before serving, `release` after."""

    def __init__(self, total: int, per_ip: int, exempt: tuple[Network, ...] = ()):
        self.total = total
        self.per_ip = per_ip
        self.exempt = exempt
        self.open = 0
        self.by_ip: dict[str, int] = {}

    def admit(self, peer: str) -> tuple[bool, str | None]:
        """(admitted, the key it was counted under against the per-address cap, if it was)."""
        if self.open >= self.total:
            return False, None
        key = self._key(peer) if self.per_ip and peer else None
        if key is not None:
            held = self.by_ip.get(key, 0)
            if held >= self.per_ip:
                return False, None
            self.by_ip[key] = held + 1
        self.open += 1
        return True, key

    def release(self, key: str | None) -> None:
        self.open -= 1
        if key is not None:
            held = self.by_ip[key] - 1
            if held:
                self.by_ip[key] = held
            else:
                del self.by_ip[key]

    def _key(self, peer: str) -> str | None:
        """What one client is: an IPv4 address, an IPv6 /64 (one subscriber's usual allocation: one
        machine may hold a whole /64); None for a trusted proxy, which is not counted."""
        address = parse_address(peer)
        if address is None:
            return peer
        if self.exempt and any(address.version == n.version and address in n for n in self.exempt):
            return None
        if address.version == 6:
            return f"{int(address) >> 64:x}/64"
        return str(address)
