"""The relay's inbound validation layer: one declarative schema per endpoint body, checked in the
endpoint's parse step before any upstream work or hold. Limits are in `fields` (and docs/limits.md).

New inbound formats reuse the pieces: declare a `msgspec.Struct` from the types in `fields`
(`ModelName`, `Temperature`, `Object`, …) and call `check(payload, Schema, error_format)`;
`model_name()` checks a model that arrives in the URL rather than in the body.
"""
from __future__ import annotations

import msgspec

from relay.errors import OPENAI
from relay.validation.core import Invalid, anthropic_path, check, check_form
from relay.validation.fields import ModelName


class _Named(msgspec.Struct):
    model: ModelName


def model_name(name: str, error_format: str = OPENAI) -> str:
    """A model name from outside the body (a URL path segment), checked as one in a body is."""
    return check({"model": name}, _Named, error_format).model


__all__ = ["Invalid", "anthropic_path", "check", "check_form", "model_name"]
