"""Playground: chat with any model the chosen key may use, streamed, or compare two to four models
side by side; an image model takes size, quality and a number of images, priced before sending.
The browser calls the relay itself with a short-lived token for the chosen key
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
    aliases = catalog.aliases(allowed)  # the operator's fallback lists: the relay tries their models in order

    def usable(key: ApiKey) -> list[str]:
        models = [m for m in allowed if not key.models or m in key.models]
        return models + [a for a, targets in aliases.items() if any(m in models for m in targets)]

    keys = [{"id": k.id, "label": f"{k.name or 'unnamed'} ({k.prefix}…)", "models": usable(k)} for k in _own_keys()]
    base_url = (current_app.config["SWITCHBOARD"].public_url or "").rstrip("/") + "/v1"
    return render_template("console/playground/index.html", keys=keys, models=allowed + list(aliases), base_url=base_url,
                           image_models=_image_models(allowed), multiplier_bp=current_user.group.multiplier_bp)


DEFAULT_SIZES = ("1024x1024", "1024x1536", "1536x1024")
DEFAULT_QUALITIES = ("standard", "hd")


def _image_models(allowed: list[str]) -> dict[str, dict]:
    """Models priced per image, with what the playground prices a run by before it is sent: the rate
    per size/quality tier (µ$; "*" matches any), the fallback per image, the per-request price, and
    the sizes and qualities to offer (the tiers the operator priced, or the usual ones)."""
    from controlplane.services.prices import current_price

    found: dict[str, dict] = {}
    for model in allowed:
        row = current_price(model)
        if row is None or (row.per_image is None and not row.image_prices):
            continue
        tiers = {str(k): int(v) for k, v in (row.image_prices or {}).items()}
        sizes = sorted({t.split("/")[0] for t in tiers if t.split("/")[0] != "*"}) or list(DEFAULT_SIZES)
        qualities = sorted({t.partition("/")[2] for t in tiers if t.partition("/")[2] not in ("*", "")}) or list(DEFAULT_QUALITIES)
        found[model] = {"tiers": tiers, "per_image": row.per_image or 0, "per_request": row.per_request or 0,
                        "tokens": bool(row.input or row.output), "sizes": sizes, "qualities": qualities}
    return found


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
