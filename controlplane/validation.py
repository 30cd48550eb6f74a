"""Input checks shared by the consoles, the CLI and the admin API. Each raises ServiceError."""
from __future__ import annotations

import ipaddress
import os
import re
import socket
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from controlplane.services.base import ServiceError
from relay.pricing import usd_to_micro

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
ALWAYS_BLOCKED = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")]
DEFAULT_ALLOWED_PRIVATE = "127.0.0.0/8,::1/128"


def email(value: str, field: str = "email") -> str:
    value = (value or "").strip().lower()
    if not EMAIL.match(value) or len(value) > 254:
        raise ServiceError("Enter an email address like name@example.com.", field)
    return value


def password(value: str, field: str = "password") -> str:
    if not value or len(value) < 8:
        raise ServiceError("Use a password of at least 8 characters.", field)
    if len(value) > 200:
        raise ServiceError("Use a password of at most 200 characters.", field)
    return value


def usd(value, field: str, *, allow_zero: bool = True, allow_negative: bool = False) -> int:
    try:
        micro = usd_to_micro(str(value))
    except ValueError as exc:
        raise ServiceError(f"Enter an amount in dollars, like 2.50 ({exc}).", field) from None
    if micro < 0 and not allow_negative:
        raise ServiceError("The amount cannot be negative.", field)
    if micro == 0 and not allow_zero:
        raise ServiceError("The amount must be more than zero.", field)
    return micro


def multiplier_bp(value, field: str = "multiplier") -> int:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ServiceError("Enter a multiplier like 1.0 or 0.85.", field) from None
    bp = number * 10_000
    if not number.is_finite() or bp != bp.to_integral_value():
        raise ServiceError("A multiplier has at most four decimals.", field)
    if bp < 0:
        raise ServiceError("A multiplier cannot be negative.", field)
    return int(bp)


def integer(value, field: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ServiceError("Enter a whole number.", field) from None


def non_negative_int(value, field: str, *, minimum: int = 0) -> int:
    number = integer(value, field)
    if number < minimum:
        raise ServiceError(f"Enter a number of at least {minimum}.", field)
    return number


def networks(values, field: str) -> list[str]:
    out = []
    for raw in values or ():
        raw = raw.strip()
        if not raw:
            continue
        try:
            out.append(str(ipaddress.ip_network(raw, strict=False)))
        except ValueError:
            raise ServiceError(f"'{raw}' is not an IP address or CIDR range.", field) from None
    return out


def timestamp(value: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise ServiceError("Enter a date and time like 2026-12-01T00:00:00Z.", field) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _allowed_private() -> list:
    raw = os.environ.get("SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS", DEFAULT_ALLOWED_PRIVATE)
    return [ipaddress.ip_network(n.strip(), strict=False) for n in raw.split(",") if n.strip()]


def _address_allowed(addr) -> bool:
    if any(addr in net for net in ALWAYS_BLOCKED if addr.version == net.version):
        return False
    if addr.is_private or addr.is_loopback or addr.is_reserved or addr.is_unspecified or addr.is_multicast:
        return any(addr in net for net in _allowed_private() if addr.version == net.version)
    return True


def base_url(value: str, field: str = "base_url") -> str:
    """An upstream base URL: http(s), a host, never link-local or cloud metadata; private ranges
    only when SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS allows them (loopback does by default)."""
    value = (value or "").strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError("Enter a URL starting with https:// (or http://), like https://api.openai.com/v1.", field)
    host = parts.hostname.lower()
    if host in METADATA_HOSTS:
        raise ServiceError("Cloud metadata addresses cannot be upstreams.", field)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, None)}
        except (socket.gaierror, UnicodeError, ValueError):
            addresses = set()  # not resolvable from here: nothing to judge it by
    for addr in addresses:
        if not _address_allowed(addr):
            raise ServiceError(
                f"{host} points at a private or link-local address ({addr}); allow its range in SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS first.",
                field,
            )
    return value.rstrip("/")
