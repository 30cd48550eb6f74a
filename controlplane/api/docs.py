"""Admin API: the interactive reference at /admin/api/docs — Swagger UI (from npm, served from
static/vendor, never a CDN) reading /admin/api/openapi.json. "Try it out" sends the operator token
given under "Authorize", like any script would."""
from __future__ import annotations

from flask import render_template

from controlplane.api import bp


@bp.get("/docs")
def docs():
    return render_template("admin/api_docs.html")
