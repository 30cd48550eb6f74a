"""Where the server may connect: the one guard every outbound connection goes through.

Channel calls, probes, model lists, customer webhooks and operator notifications all open their
sockets with `Egress.connect`, which resolves the name, keeps only the addresses the policy
permits, and connects to one of those addresses itself — so what DNS says later (rebinding) cannot
move a connection somewhere the check did not see. Saving a URL runs `Egress.check_url` for a
clear form error up front; the connect-time check is the one that holds.

Public (globally routable) addresses are permitted. Loopback, private, CGNAT, documentation and
other special ranges are refused unless the policy's allow-list names them (operators open ranges
for self-hosted upstreams; customer-supplied URLs get an empty list). Link-local addresses, cloud
metadata services, unspecified, broadcast, multicast and reserved addresses are refused always.
IPv4 addresses inside IPv6 (mapped, NAT64, 6to4) are judged as the IPv4 address they carry.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay.client_ip import Address, Network

SCHEMES = ("http", "https")
# Names of cloud metadata services; their addresses are link-local or listed in NEVER as well.
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com",
                            "instance-data", "instance-data.ec2.internal", "metadata.tencentyun.com"})
# Link-local ranges hold the metadata services of AWS, GCP and Azure (169.254.169.254); AWS also
# answers on fd00:ec2::254, Alibaba Cloud on 100.100.100.200.
METADATA = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128"))
NEVER = METADATA + tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4",  # unspecified, multicast, reserved (with broadcast)
    "::/128", "ff00::/8",  # unspecified, multicast
))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# inet_aton reads "2130706433", "0x7f000001", "0177.0.0.1" and "127.1" as addresses: one part of
# decimal, octal or hex digits per dot.
_NUMERIC_PART = re.compile(r"0x[0-9a-f]*|[0-9]+")

Resolver = Callable[..., list[Any]]


class EgressRefused(OSError):
    """The connection is not made: `code` says why (scheme, metadata, numeric, unresolvable,
    forbidden, never), `address` which address was refused when one was."""

    def __init__(self, code: str, host: str, address: Address | None = None):
        self.code, self.host, self.address = code, host, address
        where = f"{host} ({address})" if address is not None else host
        super().__init__(f"egress refused ({code}): {where}")


def unwrap(address: Address) -> Address:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def kind_of(address: Address) -> str:
    """A word for why an address is special, for messages."""
    address = unwrap(address)
    if address.is_loopback:
        return "loopback"
    if any(address.version == net.version and address in net for net in METADATA):
        return "link-local or cloud metadata"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.version == 4 and address in _CGNAT:
        return "shared (CGNAT)"
    if address.is_private:
        return "private"
    return "reserved"


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses may be connected to: public ones, plus the ranges in `allow`."""

    allow: tuple[Network, ...] = ()

    def never(self, address: Address) -> bool:
        address = unwrap(address)
        return any(address.version == net.version and address in net for net in NEVER)

    def permits(self, address: Address) -> bool:
        address = unwrap(address)
        if self.never(address):
            return False
        if address.is_global:
            return True
        return any(address.version == net.version and address in net for net in self.allow)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def target_of(url: str) -> Target:
    """Scheme, host and port of an outbound URL; EgressRefused for anything but http(s) to a host."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        raise EgressRefused("scheme", url[:100] if url else "") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.hostname:
        raise EgressRefused("scheme", parts.hostname or "")
    return Target(scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80))


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _numeric_form(host: str) -> bool:
    """A host that inet_aton would read as an IPv4 address although it is not dotted decimal."""
    parts = host.split(".")
    return len(parts) <= 4 and all(_NUMERIC_PART.fullmatch(p) for p in parts)


class Egress:
    """A policy and the resolver it trusts (the system's; tests answer names themselves)."""

    def __init__(self, policy: EgressPolicy | None = None, resolver: Resolver | None = None):
        self.policy = policy or EgressPolicy()
        self.resolver = resolver

    def _resolve(self, host: str, port: int) -> list[Any]:
        literal = _literal(host)
        if literal is not None:
            # Nothing to look up; under gevent a lookup is a trip through its thread pool, and each
            # thread it starts keeps a malloc arena of its own.
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        resolver = self.resolver or socket.getaddrinfo  # looked up now: gevent may have patched it
        try:
            infos = resolver(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise EgressRefused("unresolvable", host) from error
        if not infos:
            raise EgressRefused("unresolvable", host)
        return infos

    @staticmethod
    def _address(info: Any) -> Address:
        return ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])

    def check_name(self, host: str) -> None:
        """Refusals that need no lookup: metadata names and numeric forms that hide an address."""
        name = host.rstrip(".").lower()
        if name in METADATA_NAMES:
            raise EgressRefused("metadata", host)
        literal = _literal(name)
        if literal is None and _numeric_form(name):
            raise EgressRefused("numeric", host)
        if literal is not None and not self.policy.permits(literal):
            raise EgressRefused("never" if self.policy.never(literal) else "forbidden", host, literal)

    def check_url(self, url: str, lookup: bool = True) -> Target:
        """At save time: the URL's scheme and host, and every address its name resolves to now."""
        target = target_of(url)
        self.check_name(target.host)
        if lookup and _literal(target.host) is None:
            for info in self._resolve(target.host, target.port):
                address = self._address(info)
                if not self.policy.permits(address):
                    raise EgressRefused("never" if self.policy.never(address) else "forbidden", target.host, address)
        return target

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP connection to a permitted address of `host` (never another)."""
        self.check_name(host)
        permitted, refused = [], None
        for info in self._resolve(host, port):
            address = self._address(info)
            if self.policy.permits(address):
                permitted.append(info)
            elif refused is None:
                refused = address
        if not permitted:
            raise EgressRefused("never" if refused is not None and self.policy.never(refused) else "forbidden", host, refused)
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in permitted:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as failed:
                sock.close()
                error = failed
        raise error  # type: ignore[misc]  # permitted is not empty
