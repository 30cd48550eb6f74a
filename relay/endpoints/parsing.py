"""Reading request bodies: the checks every JSON endpoint makes, answered as 400s."""
from __future__ import annotations

import orjson

from relay.errors import bad_request


def json_object(body: bytes) -> dict:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload


def model_of(payload: dict, default: str | None = None) -> str:
    model = payload.get("model", default)
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_required_parameter")
    return model


def positive_int(payload: dict, *fields: str, required: bool = False) -> int | None:
    """The first of `fields` present, which must be a positive integer."""
    for field in fields:
        if field in payload and payload[field] is not None:
            value = payload[field]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad_request(f"{field} must be a positive integer.", param=field)
            return value
    if required:
        raise bad_request(f"{fields[0]} is required.", param=fields[0], code="missing_required_parameter")
    return None
