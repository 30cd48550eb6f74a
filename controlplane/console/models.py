"""Models and pricing, public (no sign-in): every model the operator serves with its price per 1M
tokens of each kind and per request, and scheduled changes with their dates. The same data is at
/models.json, a stable URL for scripts."""
from __future__ import annotations

from flask import Blueprint, jsonify, render_template
from flask_login import current_user

from controlplane import catalog
from controlplane.models import ModelPrice, utcnow
from relay.pricing import micro_to_usd

bp = Blueprint("models", __name__)
KINDS = ("input", "cache_read", "cache_write", "output", "reasoning")
LABELS = {"input": "Input", "cache_read": "Cached input", "cache_write": "Cache write", "output": "Output", "reasoning": "Reasoning"}


def effective(row: ModelPrice) -> dict[str, int]:
    """What each kind is billed at (no cache price bills as input, no reasoning as output)."""
    return {"input": row.input, "cache_read": row.input if row.cache_read is None else row.cache_read,
            "cache_write": row.input if row.cache_write is None else row.cache_write, "output": row.output,
            "reasoning": row.output if row.reasoning is None else row.reasoning, "per_request": row.per_request}


def price_json(row: ModelPrice) -> dict:
    rates = effective(row)
    return {
        "effective_from": row.effective_from.isoformat(),
        "usd_per_1m_tokens": {k: micro_to_usd(rates[k]).lstrip("$") for k in KINDS},
        "usd_per_request": micro_to_usd(rates["per_request"]).lstrip("$"),
        "micro_usd_per_1m_tokens": {k: rates[k] for k in KINDS},
        "micro_usd_per_request": rates["per_request"],
        "max_output_tokens": row.max_output_tokens,
    }


@bp.get("/models")
def index():
    offers = catalog.offers()
    multiplier = current_user.group.multiplier_bp if current_user.is_authenticated and not current_user.is_operator else None
    return render_template("public/models.html", offers=offers, effective=effective, kinds=KINDS, labels=LABELS, multiplier=multiplier)


@bp.get("/models.json")
def as_json():
    data = [{"id": o.model, "current": price_json(o.current) if o.current else None, "upcoming": [price_json(u) for u in o.upcoming]}
            for o in catalog.offers()]
    response = jsonify({"object": "list", "currency": "USD", "generated_at": utcnow().isoformat(), "data": data})
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
