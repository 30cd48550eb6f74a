"""Operator console: the dashboard — requests, revenue, upstream cost and margin, errors, latency
and time to first token, by model or channel, from rollups; and channel health at a glance."""
from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request

from controlplane import dead_letters
from controlplane.admin import OPERATORS
from controlplane.auth import require_roles
from controlplane.queries import dashboard as dash
from controlplane.runtime import runtime

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


def _args() -> tuple[str, str]:
    range_name = request.args.get("range", "day")
    by = request.args.get("by", "model")
    return (range_name if range_name in dash.RANGES else "day"), (by if by in dash.BREAKDOWNS else "model")


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    range_name, by = _args()
    rep = dash.report(range_name, by)
    return render_template("admin/dashboard/index.html", rep=rep, ranges=dash.RANGE_LABELS, health=dash.channel_health(),
                           dead_letters=dead_letters.count(runtime().redis))


@bp.get("/data.json")
@require_roles(*OPERATORS)
def data():
    range_name, by = _args()
    return jsonify(dash.chart_data(dash.report(range_name, by)))
