"""Tiny JSON Schema builders for the OpenAPI document: the shapes route declarations name."""
from __future__ import annotations

STR = {"type": "string"}
INT = {"type": "integer"}
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
