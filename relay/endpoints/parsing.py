"""Reading request bodies: JSON that is not an object is a 400 before any schema is checked
(relay/validation/)."""
from __future__ import annotations

from typing import Any

import orjson

from relay.errors import bad_request


def json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload
