"""The customer's API page: this gateway's base URL, the OpenAI-compatible endpoints, the endpoints
a key asks about itself (/v1/generation, /v1/key, /v1/dashboard/billing/*), and code to call them
in Python, JavaScript and curl with this gateway's own base URL."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

from controlplane.console.access import console_view

bp = Blueprint("api_page", __name__)


@bp.get("/api")
@console_view
def index():
    base_url = (current_app.config["SWITCHBOARD"].public_url or "").rstrip("/") + "/v1"
    return render_template("console/api.html", base_url=base_url)
