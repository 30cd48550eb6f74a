"""`POST /stripe/webhook`: where Stripe delivers its events. The signature is checked (the signing
secret the operator entered, a five-minute timestamp tolerance) before anything is read; money
moves in services/stripe_events.py. Answers are short JSON for Stripe's delivery log: 2xx when the
event is handled (or ignored, or handled already), 400 for a bad signature, 409 for an event that
must come again later, 503 when card payments are not configured."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from controlplane.extensions import csrf, db
from controlplane.services import payment_settings, stripe_events
from controlplane.stripe_gateway import BadSignature, verify_event

log = logging.getLogger(__name__)
bp = Blueprint("stripe_webhook", __name__)
MAX_BODY = 512 * 1024  # Stripe's events are a few kilobytes


@bp.post("/stripe/webhook")
@csrf.exempt
def receive():
    request.max_content_length = MAX_BODY  # a longer body (declared or chunked) is a 413, unread
    config = payment_settings.load()
    if not config.webhook_secret:
        return jsonify(error="card payments are not configured"), 503
    try:
        payload = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return jsonify(error="body too large"), 413
    try:
        event = verify_event(payload, request.headers.get("Stripe-Signature"), config.webhook_secret)
    except BadSignature as error:
        log.warning("Stripe webhook refused: %s", error)
        return jsonify(error=f"signature: {error}"), 400
    try:
        outcome = stripe_events.handle(event)
    except stripe_events.RetryLater as later:
        db.session.rollback()
        return jsonify(error=str(later)), 409
    log.info("Stripe event %s (%s): %s", event.id, event.type, outcome)
    return jsonify(received=True, outcome=outcome)


def init_app(app) -> None:
    app.register_blueprint(bp)
