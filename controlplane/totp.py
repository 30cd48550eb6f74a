"""Time-based one-time codes (RFC 6238, via pyotp) and recovery codes: the arithmetic, no storage.

A code is accepted for the current 30-second step and one step either side (clocks drift, people
type slowly); the caller records the step it matched so that the same code cannot be used twice.
Recovery codes are 80 random bits, shown once and kept as SHA-256 hashes, like API keys.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp

ISSUER = "Switchboard"
STEP_SECONDS = 30
WINDOW = 1  # steps accepted either side of now
RECOVERY_CODES = 10
MAX_CODE_LENGTH = 32  # a form field longer than any code we issue is refused unread
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper and typed back


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, the size RFC 4226 recommends


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // STEP_SECONDS)


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step whose code `code` is, within the window around now; None if none is."""
    code = "".join(code.split())
    if len(code) != 6 or not (code.isascii() and code.isdigit()):  # "²" is a digit to str.isdigit, and compare_digest refuses it
        return None
    step, totp = current_step(now), pyotp.TOTP(secret)
    found = None
    for candidate in range(step - WINDOW, step + WINDOW + 1):  # every step checked: same time either way
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            found = candidate
    return found


def looks_like_totp(code: str) -> bool:
    code = "".join(code.split())
    return len(code) == 6 and code.isascii() and code.isdigit()


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """`count` codes like `k7mx-2q9p-hd4r-wn3c` (16 characters of 31: about 80 bits each)."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(16))
        codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
    return codes


def normalise_recovery_code(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def recovery_hash(code: str) -> str:
    return hashlib.sha256(normalise_recovery_code(code).encode()).hexdigest()
