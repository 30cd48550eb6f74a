"""Operator console: request logs — filters, cursor pages, one request's detail with its decision
trace, and a CSV export that streams however many rows match."""
from __future__ import annotations

from flask import Blueprint, Response, abort, render_template, request, stream_with_context
from sqlalchemy import select

from controlplane.admin import OPERATORS
from controlplane.auth import require_roles
from controlplane import trace_view
from controlplane.extensions import db
from controlplane.models import ApiKey, Channel, Refund, RequestLog, User, utcnow
from controlplane.queries import logs as log_queries
from controlplane.queries.pagination import per_page, row_id

bp = Blueprint("logs", __name__, url_prefix="/logs")


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    filters = log_queries.LogFilters.from_args(request.args)
    before = row_id(request.args.get("before"))
    page = log_queries.page(filters, before, per_page(request.args))
    emails, channel_names = log_queries.names_for(page.items)
    channels = list(db.session.execute(select(Channel.id, Channel.name).order_by(Channel.name)))
    return render_template("admin/logs/list.html", page=page, filters=filters, emails=emails, channel_names=channel_names, channels=channels,
                           ranges=log_queries.QUICK_RANGES, filtered=bool(filters.args()))


@bp.get("/export.csv")
@require_roles(*OPERATORS)
def export():
    filters = log_queries.LogFilters.from_args(request.args)
    if filters.errors:
        abort(400)
    name = f"requests-{utcnow():%Y%m%d-%H%M}.csv"
    return Response(stream_with_context(log_queries.csv_chunks(filters)), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={name}", "X-Accel-Buffering": "no"})


@bp.get("/<request_id>")
@require_roles(*OPERATORS)
def detail(request_id: str):
    log = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
    if log is None:
        abort(404)
    user = db.session.get(User, log.user_id) if log.user_id else None
    key = db.session.get(ApiKey, log.api_key_id) if log.api_key_id else None
    channel = db.session.get(Channel, log.channel_id) if log.channel_id else None
    refund = db.session.scalar(select(Refund).where(Refund.request_id == log.request_id))
    channel_names = dict(db.session.execute(select(Channel.id, Channel.name).where(Channel.id.in_(_trace_channels(log.trace)))).all())
    return render_template("admin/logs/detail.html", log=log, user=user, key=key, channel=channel, refund=refund,
                           steps=trace_view.timeline(log.trace, channel_names))


def _trace_channels(trace) -> set[int]:
    """Every channel id a decision trace mentions (candidates and attempts)."""
    ids = set()
    for step in trace or []:
        if isinstance(step, dict):
            ids.update(c for c in [step.get("channel"), *(step.get("channels") or [])] if isinstance(c, int))
    return ids
