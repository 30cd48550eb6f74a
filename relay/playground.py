"""Short-lived playground tokens: how the console's playground calls the relay with a key the user
picked, although a key's secret is never retrievable after creation.

The control plane signs "key id + expiry" with an HMAC key derived from the shared encryption key;
the relay verifies it and treats the request exactly as if that key had sent it (same checks, same
billing). A token is good for one key, for minutes. Pure: no I/O.
"""
from __future__ import annotations

import hashlib
import hmac

PREFIX = "sk-sbpg-"
TTL_SECONDS = 900


def signing_key(encryption_key: str) -> bytes:
    """A key of its own, so a playground token says nothing about the encryption key."""
    return hashlib.sha256(b"switchboard playground token v1\x00" + encryption_key.encode()).digest()


def _signature(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def mint(key: bytes, api_key_id: int, expires_at: int) -> str:
    body = f"{api_key_id}.{expires_at}"
    return f"{PREFIX}{body}.{_signature(key, body)}"


def verify(key: bytes, token: str, now: float) -> int | None:
    """The API key id a valid, unexpired token names; None otherwise."""
    if not token.startswith(PREFIX):
        return None
    key_id, _, rest = token[len(PREFIX):].partition(".")
    expires, _, signature = rest.partition(".")
    # ASCII only: str.isdigit admits "²" (int() refuses it) and compare_digest refuses non-ASCII text.
    if not (token.isascii() and key_id.isdigit() and expires.isdigit() and signature):
        return None
    if not hmac.compare_digest(signature, _signature(key, f"{key_id}.{expires}")):
        return None
    if now >= int(expires):
        return None
    return int(key_id)
