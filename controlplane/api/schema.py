"""Tiny JSON Schema builders for the OpenAPI document: the shapes route declarations name, and
`mismatch`, which holds a request body to the shape its route declares before any service sees it."""
from __future__ import annotations

from typing import Any

# Ids and counts are stored in 64-bit signed columns; a larger number can only be a mistake, and
# both SQL drivers raise (rather than refuse) on one.
INT64_MAX = 2**63 - 1
STR = {"type": "string"}
INT = {"type": "integer", "minimum": -INT64_MAX - 1, "maximum": INT64_MAX}
BOOL = {"type": "boolean"}
USD = {"type": "string", "description": "US dollars as a decimal string, e.g. \"2.50\" (exact; no floats)", "example": "2.50"}
WHEN = {"type": "string", "format": "date-time"}
ANY = {"type": "object", "additionalProperties": True}


def arr(item: dict) -> dict:
    return {"type": "array", "items": item}


def obj(required: tuple[str, ...] = (), **props) -> dict:
    schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def described(schema: dict, text: str) -> dict:
    return {**schema, "description": text}


PAGE = {"page": INT, "per_page": INT}
KINDS = {"string": "a string", "integer": "an integer", "boolean": "true or false", "array": "a list", "object": "a JSON object"}


def _fits(schema: dict, value: Any) -> bool:
    kind = schema.get("type")
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) and schema.get("minimum", -INT64_MAX - 1) <= value <= INT64_MAX
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list) and all(_fits(schema.get("items", {}), item) for item in value)
    if kind == "object":
        values = schema.get("additionalProperties")
        return isinstance(value, dict) and (not isinstance(values, dict) or all(_fits(values, v) for v in value.values()))
    return True


def mismatch(schema: dict, data: dict) -> tuple[str, str] | None:
    """The first declared field whose value is not of its declared type, with a message. A field
    left out or sent as null is the service's to explain (it knows the defaults)."""
    for name, prop in schema.get("properties", {}).items():
        value = data.get(name)
        if value is not None and not _fits(prop, value):
            kind = KINDS.get(prop.get("type", ""), "of another type")
            if prop.get("type") == "array":
                kind = f"a list of {prop.get('items', {}).get('type', 'value')}s"
            return name, f"{name} is {kind}."
    return None
