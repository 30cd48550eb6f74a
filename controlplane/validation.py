"""Input checks shared by the consoles, the CLI and the admin API. Each raises ServiceError."""
from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from controlplane.runtime import runtime
from controlplane.services.base import ServiceError
from relay.egress import EgressRefused, kind_of
from relay.pricing import usd_to_micro

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


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


def _outbound_url(value: str, field: str, customer: bool, lookup: bool) -> str:
    value = (value or "").strip()
    if len(value) > 500:
        raise ServiceError("A URL is at most 500 characters.", field)
    try:
        runtime().egress(customer=customer).check_url(value, lookup=lookup)
    except EgressRefused as refused:
        raise ServiceError(_refusal(refused, customer), field) from None
    return value.rstrip("/")


def _refusal(refused: EgressRefused, customer: bool) -> str:
    host, address = refused.host, refused.address
    if refused.code == "scheme":
        return "Enter a URL starting with https:// (or http://), like https://api.openai.com/v1."
    if refused.code == "metadata":
        return "Cloud metadata addresses cannot be used."
    if refused.code == "numeric":
        return f"Write the address {host} as four decimal numbers, like 203.0.113.5."
    if refused.code == "unresolvable":
        return f"{host} does not resolve from this server: check the name."
    where = f"{host} is" if str(address) == host else f"{host} points at {address},"
    if refused.code == "never" or customer:
        return f"{where} a {kind_of(address)} address: {'webhooks go to public addresses only' if customer else 'it can never be an upstream'}."
    return f"{where} a {kind_of(address)} address; allow its range in SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS first."


def upstream_url(value: str, field: str = "base_url", lookup: bool = True) -> str:
    """A channel's base URL: http(s) to a host whose every address is public or in a range the
    operator opened. `lookup=False` skips asking DNS (the URL did not change, or seeded demo data);
    the relay checks the address again whenever it connects."""
    return _outbound_url(value, field, customer=False, lookup=lookup)


def webhook_url(value: str, field: str = "webhook_url") -> str:
    """A customer's webhook: http(s) to a host whose every address is public, never private space."""
    return _outbound_url(value, field, customer=True, lookup=True)
