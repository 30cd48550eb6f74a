"""JSON Schema → the OpenAPI subset Gemini accepts for function parameters and response schemas.

Gemini refuses keys it does not know (additionalProperties, $schema, const, most formats …), type
lists, and $ref. References are inlined (to a bounded depth), `["T", "null"]` becomes a nullable T,
`const` a one-value enum, and everything else Gemini does not know is dropped.
"""
from __future__ import annotations

from typing import Any

KEPT = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties", "required",
    "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf", "propertyOrdering",
    "default", "items", "minimum", "maximum",
}
STRING_FORMATS = {"enum", "date-time"}
MAX_DEPTH = 12


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for key in ref[2:].split("/"):
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return {}
    return node if isinstance(node, dict) else {}


def clean_schema(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    if not isinstance(schema, dict):
        return schema
    root = schema if root is None else root
    if "$ref" in schema and depth < MAX_DEPTH:
        merged = {**_resolve(schema["$ref"], root), **{k: v for k, v in schema.items() if k != "$ref"}}
        return clean_schema(merged, root, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in KEPT and key != "const":
            continue
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if len(kinds) < len(value):
                out["nullable"] = True
            value = kinds[0] if kinds else "string"
        if key == "const":
            key, value = "enum", [value]
        if key == "properties" and isinstance(value, dict):
            value = {name: clean_schema(sub, root, depth + 1) for name, sub in value.items()}
        elif key == "items":
            value = clean_schema(value, root, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            value = [clean_schema(sub, root, depth + 1) for sub in value]
        out[key] = value
    if out.get("type") == "string" and out.get("format") not in STRING_FORMATS:
        out.pop("format", None)
    if "enum" in out:
        if out.setdefault("type", "string") == "string":
            out["enum"] = [str(v) for v in out["enum"] if v is not None]
        else:
            out.pop("enum")  # Gemini enums are strings only; a numeric enum loses its constraint
    if out.get("type") == "object" and not out.get("properties"):
        # Gemini refuses an object type with no properties: leave the shape open instead.
        out.pop("properties", None)
        out.pop("required", None)
    return out
