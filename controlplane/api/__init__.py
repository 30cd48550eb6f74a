"""The admin JSON API under /admin/api/v1, for scripts: the console's actions as JSON.

Callers authenticate with an operator API token (`Authorization: Bearer sbop-…`) — never the
browser session, so no CSRF applies and a logged-in browser cannot be tricked into calling it.
A token acts as its operator, with that operator's role. Routes are declared with `route()`, which
also records them for the OpenAPI document (spec.py), so the document cannot drift from the code.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import HTTPException

from controlplane.api.schema import INT64_MAX, mismatch
from controlplane.extensions import csrf
from controlplane.models import Role
from controlplane.services import ServiceError, api_tokens
from controlplane.services.base import Actor

bp = Blueprint("api", __name__, url_prefix="/admin/api")
READERS = (Role.ADMIN, Role.OPERATOR, Role.SUPPORT)
WRITERS = (Role.ADMIN, Role.OPERATOR)
ADMINS = (Role.ADMIN,)
REFUNDERS = READERS
PUBLIC = {"api.openapi", "api.docs"}  # the spec and its reader; every operation needs a token


@dataclass
class Operation:
    """One API route as the OpenAPI document describes it."""

    method: str
    rule: str  # Flask rule, e.g. /v1/channels/<int:channel_id>
    endpoint: str
    summary: str
    tag: str
    roles: tuple
    body: dict | None = None
    query: dict = field(default_factory=dict)
    status: int = 200
    returns: str = "application/json"
    errors: dict = field(default_factory=dict)  # failures beyond spec.FAILURES: status → meaning


OPERATIONS: list[Operation] = []
BODIES: dict[str, dict] = {}  # endpoint → its declared body schema


def error(status: int, message: str, code: str, field_name: str | None = None):
    body = {"error": {"message": message, "code": code}}
    if field_name:
        body["error"]["param"] = field_name
    return jsonify(body), status


def route(rule: str, method: str, *, summary: str, tag: str, roles=READERS, body: dict | None = None, query: dict | None = None,
          status: int = 200, returns: str = "application/json", errors: dict | None = None):
    """Register `fn` at `rule` for `roles` and describe it in the OpenAPI document."""
    def decorate(fn):
        endpoint = fn.__name__
        OPERATIONS.append(Operation(method, rule, f"api.{endpoint}", summary, tag, tuple(roles), body, query or {}, status, returns, errors or {}))
        if body is not None:
            BODIES[f"api.{endpoint}"] = body
        allowed = {str(r) for r in roles}

        @functools.wraps(fn)
        def wrapped(**kwargs):
            if g.api_user.role not in allowed:
                return error(403, "Your role does not allow this.", "forbidden")
            if any(isinstance(v, int) and v > INT64_MAX for v in kwargs.values()):
                return error(404, "Not found.", "not_found")  # no row has an id past the column's range
            return fn(**kwargs)

        bp.add_url_rule(rule, endpoint, wrapped, methods=[method])
        return wrapped

    return decorate


def actor() -> Actor:
    return Actor(name=f"{g.api_user.email} (API token {g.api_token.prefix}…)", id=g.api_user.id, ip=request.remote_addr)


def payload() -> dict:
    """The JSON object body, each declared field of its declared type; anything else is a 400."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ServiceError("Send a JSON object body with Content-Type: application/json.")
    wrong = mismatch(BODIES.get(request.endpoint or "", {}), data)
    if wrong is not None:
        raise ServiceError(wrong[1], wrong[0])
    return data


@bp.before_request
def authenticate():
    if request.endpoint in PUBLIC:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    found = api_tokens.authenticate(secret.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        return error(401, "Send a valid operator API token: Authorization: Bearer sbop-…", "unauthenticated")
    g.api_token, g.api_user = found
    return None


@bp.errorhandler(ServiceError)
def service_error(exc: ServiceError):
    code = {404: "not_found", 409: "conflict", 403: "forbidden", 502: "upstream_error"}.get(exc.status, "invalid_request")
    return error(exc.status, exc.message, code, exc.field)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return error(exc.code or 500, exc.description or exc.name, exc.name.lower().replace(" ", "_"))


def register(app) -> None:
    csrf.exempt(bp)
    app.register_blueprint(bp)


# The resource modules declare their routes on `bp` at import, once, before any app registers it.
from controlplane.api import channels, money, people, prices, reads, spec  # noqa: E402,F401
from controlplane.api import dead_letters, disruption, docs, incidents, organisations, payments  # noqa: E402,F401
