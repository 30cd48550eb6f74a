"""Playground: chat with any model the chosen key may use, streamed, or compare two to four models
side by side. The browser calls the relay itself with a short-lived token for the chosen key
(relay/playground.py), so each run is billed and logged like any request; the cost shown under
an answer is read back from the request log once the worker has written it."""
from __future__ import annotations

import time

from flask import Blueprint, abort, current_app, jsonify, render_template, request
from flask_login import current_user
from sqlalchemy import select

from controlplane import catalog
from controlplane.console.access import console_view, current_scope
from controlplane.extensions import db
from controlplane.models import ApiKey, KeyStatus, RequestLog
from relay import playground as tokens

bp = Blueprint("playground", __name__, url_prefix="/playground")


def _own_keys() -> list[ApiKey]:
    """Keys the person may run with: their own, enabled, in the current account."""
    scope = current_scope()
    return list(db.session.scalars(select(ApiKey).where(scope.keys_clause(), ApiKey.user_id == current_user.id,
                                                        ApiKey.status == KeyStatus.ENABLED.value).order_by(ApiKey.id.desc())))


@bp.get("/")
@console_view
def index():
    allowed = catalog.allowed_models(current_user.group)
    keys = [{"id": k.id, "label": f"{k.name or 'unnamed'} ({k.prefix}…)", "models": [m for m in allowed if not k.models or m in k.models]}
            for k in _own_keys()]
    base_url = (current_app.config["SWITCHBOARD"].public_url or "").rstrip("/") + "/v1"
    return render_template("console/playground/index.html", keys=keys, models=allowed, base_url=base_url)


@bp.post("/token")
@console_view
def token():
    """A token for one of the person's own keys, good for minutes (CSRF-checked like any POST)."""
    key_id = (request.get_json(silent=True) or {}).get("key_id")
    key = next((k for k in _own_keys() if k.id == key_id), None)
    if key is None:
        abort(404)
    expires = int(time.time()) + tokens.TTL_SECONDS
    secret = tokens.signing_key(current_app.config["SWITCHBOARD"].encryption_key)
    return jsonify(token=tokens.mint(secret, key.id, expires), expires_at=expires)


@bp.get("/requests/<request_id>")
@console_view
def outcome(request_id: str):
    """The billed outcome of one run. 404 until the worker has written it (within seconds) — the
    same answer as for someone else's request, so the page retries and ids reveal nothing."""
    row = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id, current_scope().logs_clause()))
    if row is None:
        return jsonify(status="not_found_yet"), 404
    return jsonify(status="done", cost_micro_usd=row.cost, http_status=row.status, latency_ms=row.latency_ms, ttft_ms=row.ttft_ms,
                   tokens={"input": row.input_tokens, "cache_read": row.cache_read_tokens, "cache_write": row.cache_write_tokens,
                           "output": row.output_tokens, "reasoning": row.reasoning_tokens})
