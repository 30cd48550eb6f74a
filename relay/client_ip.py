"""Who the client is behind trusted proxies: `X-Forwarded-For` / `Forwarded` walked from the right.

Pure and import-light so the relay and the control plane share one reading. A proxy appends the
address it received the connection from, so the rightmost entries are the ones our own proxies
wrote; anything further left is whatever the client claimed. We walk from the peer leftwards while
the hop is a trusted proxy and stop at the first address that is not: that one is the client. A
peer that is not a trusted proxy is the client, whatever headers it sent.

`X-Forwarded-For` is read when present (nginx, HAProxy, Envoy, cloud load balancers write it);
`Forwarded` (RFC 7239) only when it is absent. A proxy that writes only `Forwarded` must drop an
incoming `X-Forwarded-For`, or a client could choose which list is read.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Hops looked at, at most: a long header is a client's invention past the first few entries anyway.
MAX_HOPS = 32


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """CIDRs (or single addresses) separated by commas or spaces; ValueError names a bad entry."""
    networks = []
    for item in (text or "").replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {item!r}") from None
    return tuple(networks)


@lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """An address as proxies write it: bare, `1.2.3.4:port`, `[v6]` or `[v6]:port`; IPv4-mapped
    IPv6 is read as the IPv4 address. None for anything else (`unknown`, `_hidden`, garbage)."""
    text = text.strip().strip('"')
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(header: str) -> list[str]:
    """The `for=` values of an RFC 7239 header, in order (quoted strings may hold commas)."""
    values: list[str] = []
    for element in _split_quoted(header, ","):
        found = "unknown"  # an element without for= is a hop we cannot see past
        for pair in _split_quoted(element, ";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "for":
                found = value.strip()
        values.append(found)
    return values


def _split_quoted(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _trusted(address: Address, trusted: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(peer: str, forwarded_for: str | None, forwarded: str | None,
                   trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer unless the peer is a trusted proxy, then the rightmost
    forwarded hop that is not itself trusted. An unreadable hop ends the walk at the last trusted
    address seen, since nothing left of it can be believed."""
    current = parse_address(peer) if peer else None
    if current is None:
        return peer
    if not trusted or not _trusted(current, trusted):
        return str(current)
    if forwarded_for:
        hops = forwarded_for.split(",")
    elif forwarded:
        hops = _forwarded_for(forwarded)
    else:
        return str(current)
    for hop in reversed(hops[-MAX_HOPS:]):
        address = parse_address(hop)
        if address is None:
            break
        current = address
        if not _trusted(current, trusted):
            break
    return str(current)
