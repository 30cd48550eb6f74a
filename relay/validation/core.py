"""Checking a parsed request body against its endpoint's schema, and the 400 a caller gets when it
does not fit.

A schema is a `msgspec.Struct` per body shape (relay/validation/openai.py, anthropic.py): fields the
relay knows are typed and bounded, unknown fields are ignored by the check and forwarded untouched
(providers add fields all the time). msgspec does the walk in C: a typical chat body is checked in
about a microsecond, so every request is checked before any upstream work and before its hold.
A schema may add rules across fields with a `problem()` method returning (field, reason).
"""
from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from relay.errors import ANTHROPIC, OPENAI, RelayError

T = TypeVar("T")

_AT = re.compile(r"^(?P<reason>.*?) - at `(?P<path>[^`]*)`(?: in `(?P<parent>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "object": "an object",
               "array": "an array", "null": "null"}
_TYPES = re.compile(r"`([a-z |]+)`")


class Invalid(Exception):
    """A field that does not fit: `param` in OpenAI's notation (`messages[0].content`)."""

    def __init__(self, param: str | None, reason: str, code: str = "invalid_value"):
        super().__init__(f"{param}: {reason}" if param else reason)
        self.param = param
        self.reason = reason
        self.code = code

    def relay_error(self, error_format: str = OPENAI) -> RelayError:
        where = anthropic_path(self.param) if error_format == ANTHROPIC else self.param
        message = f"{where}: {self.reason}" if where else self.reason
        return RelayError(400, self.code, message, param=self.param)


def anthropic_path(param: str | None) -> str | None:
    """`messages[0].content` as Anthropic writes it: `messages.0.content`."""
    return re.sub(r"\[(\d+)\]", r".\1", param) if param else param


def check(payload: dict[str, Any], schema: type[T], error_format: str = OPENAI) -> T:
    """`payload` as an instance of `schema`, or a 400 RelayError naming the first field that does not fit."""
    try:
        spec = msgspec.convert(payload, schema)
    except msgspec.ValidationError as error:
        raise invalid(str(error)).relay_error(error_format) from None
    problem = spec.problem() if hasattr(spec, "problem") else None
    if problem is not None:
        raise Invalid(*problem).relay_error(error_format)
    return spec


def check_form(fields: dict[str, str], schema: type[T]) -> T:
    """Text fields of a multipart form: numbers and booleans arrive as text ("0.2", "true")."""
    try:
        return msgspec.convert(fields, schema, strict=False)
    except msgspec.ValidationError as error:
        raise invalid(str(error)).relay_error(OPENAI) from None


def invalid(message: str) -> Invalid:
    """msgspec's "Expected `int`, got `str` - at `$.n`" as an `Invalid` naming the field."""
    found = _AT.match(message)
    if found is None:  # at the top level msgspec names no path
        where, reason, parent = "$", message, None
    else:
        parent, reason = found.group("parent"), found.group("reason")
        where = parent or found.group("path")  # a bad key names its map
    param = where[2:] if where.startswith("$.") else where[1:]
    param = param.replace("[...]", "")  # a value inside a map: the map is what to fix
    missing = _MISSING.match(reason)
    if missing:
        param = f"{param}.{missing.group('field')}" if param else missing.group("field")
        return Invalid(param, "this field is required.", "missing_required_parameter")
    if parent:
        reason = reason.replace("Expected `str`", "Expected keys to be strings", 1)
    code = "invalid_type" if ", got `" in reason else "invalid_value"
    return Invalid(param or None, _words(reason) + ".", code)


def _words(reason: str) -> str:
    if "matching regex" in reason:
        return "expected printable text without control characters"
    reason = _TYPES.sub(lambda m: " or ".join(_TYPE_WORDS.get(t.strip(), t.strip()) for t in m.group(1).split("|")), reason)
    return reason[:1].lower() + reason[1:]
