"""The public status page (no sign-in): per model and per group the operator shows, uptime over
24 hours, 7 days and 30 days, latency and time to first token, error rate, the state right now and
the incidents operators wrote. The same document is at /status.json. Both are built from the hourly
rollups at most once a minute (kept in Redis, dropped when an incident changes); nothing on them
names a channel or an upstream."""
from __future__ import annotations

import logging
from datetime import datetime

import orjson
from flask import Blueprint, jsonify, render_template

from controlplane.queries import status as status_query
from controlplane.runtime import runtime
from relay import redis_keys

bp = Blueprint("status", __name__)
log = logging.getLogger(__name__)
CACHE_SECONDS = 60
STATE_LABELS = {"operational": "Operational", "degraded": "Degraded", "outage": "Outage"}
WINDOW_LABELS = {"24h": "24 h", "7d": "7 d", "30d": "30 d"}


def document() -> dict:
    """The public status document: from Redis when built in the last minute, else built and kept."""
    redis = runtime().redis
    try:
        cached = redis.get(redis_keys.STATUS_PAGE)
    except Exception:  # the page still answers from SQL when Redis does not
        log.warning("status page cache unavailable", exc_info=True)
        cached = None
    if cached:
        return orjson.loads(cached)
    doc = status_query.public_document(status_query.report())
    try:
        redis.set(redis_keys.STATUS_PAGE, orjson.dumps(doc), ex=CACHE_SECONDS)
    except Exception:
        log.warning("status page cache unavailable", exc_info=True)
    return doc


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@bp.get("/status")
def index():
    doc = document()
    incidents = [dict(i, started_at=_moment(i["started_at"]), ended_at=_moment(i["ended_at"])) for i in doc["incidents"]]
    return render_template("public/status.html", doc=doc, incidents=incidents, generated_at=_moment(doc["generated_at"]),
                           states=STATE_LABELS, windows=WINDOW_LABELS)


@bp.get("/status.json")
def as_json():
    response = jsonify(document())
    response.headers["Cache-Control"] = f"public, max-age={CACHE_SECONDS}"
    return response
