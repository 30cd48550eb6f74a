"""The OpenAPI 3.1 document of the admin API, built from the routes as declared (never by hand)."""
from __future__ import annotations

import re

from flask import jsonify

from controlplane.api import OPERATIONS, bp
from controlplane.api.schema import STR, obj

PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
ERROR = obj(("error",), error=obj(("message", "code"), message=STR, code=STR, param=STR))
FAILURES = {"400": "The request is invalid; error.param names the field", "401": "No valid operator API token",
            "403": "Your role does not allow this", "404": "Not found", "409": "Conflicts with the current state"}


def openapi_path(rule: str) -> str:
    return "/admin/api" + PARAM.sub(lambda m: "{" + m.group(2) + "}", rule)


def _parameters(op) -> list[dict]:
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "integer" if conv == "int" else "string"}}
              for conv, name in PARAM.findall(op.rule)]
    params += [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in op.query.items()]
    return params


def _operation(op) -> dict:
    roles = ", ".join(str(r) for r in op.roles)
    schema = {"type": "string"} if op.returns != "application/json" else {"type": "object"}
    ok = {"description": "No content"} if op.status == 204 else {"description": "OK", "content": {op.returns: {"schema": schema}}}
    entry = {
        "operationId": op.endpoint.split(".")[-1],
        "summary": op.summary,
        "description": f"Roles: {roles}.",
        "tags": [op.tag],
        "x-roles": [str(r) for r in op.roles],
        "parameters": _parameters(op),
        "responses": {str(op.status): ok,
                      **{code: {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                         for code, text in {**FAILURES, **{str(k): v for k, v in op.errors.items()}}.items()}},
    }
    if op.body is not None:
        entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
    return entry


def document() -> dict:
    paths: dict = {}
    for op in OPERATIONS:
        paths.setdefault(openapi_path(op.rule), {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard admin API", "version": "1",
                 "description": "Everything the operator console does, for scripts. Authenticate with an operator API token "
                                "(console → API tokens) as `Authorization: Bearer sbop-…`; it acts with its operator's role. "
                                "Money is integer micro-dollars (µ$) in responses and decimal dollar strings in requests."},
        "security": [{"operatorToken": []}],
        "components": {"securitySchemes": {"operatorToken": {"type": "http", "scheme": "bearer"}}, "schemas": {"Error": ERROR}},
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
