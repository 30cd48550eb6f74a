"""Admin API: request logs (filters, cursor pages, CSV), the audit log, and dashboard numbers."""
from __future__ import annotations

from flask import Response, abort, jsonify, request, stream_with_context
from sqlalchemy import select

from controlplane.queries.audit import filtered as audit_query
from controlplane.api import route
from controlplane.api.schema import INT, PAGE, STR, WHEN
from controlplane.extensions import db
from controlplane.models import RequestLog
from controlplane.queries import dashboard as dash, logs as log_queries
from controlplane.queries.pagination import page_number, paginate, per_page, row_id
from controlplane.services import ServiceError

LOG_FILTERS = dict(since=WHEN, until=WHEN, range=STR, user=STR, key=STR, model=STR, channel=INT, status=STR, error_code=STR)
LOG_FIELDS = ("request_id", "endpoint", "stream", "status", "error_code", "user_id", "api_key_id", "account_id", "model", "upstream_model",
              "channel_id", "channel_key_id", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
              "usage_source", "latency_ms", "ttft_ms", "queue_ms", "client_ip")


def log_dict(row: RequestLog, trace: bool = False) -> dict:
    out = {f: getattr(row, f) for f in LOG_FIELDS}
    out.update(started_at=row.started_at.isoformat(), finished_at=row.finished_at.isoformat(), cost_micro_usd=row.cost)
    if trace:
        out["trace"] = row.trace
    return out


def _filters():
    filters = log_queries.LogFilters.from_args(request.args)
    if filters.errors:
        name, message = next(iter(filters.errors.items()))
        raise ServiceError(message, name)
    return filters


@route("/v1/logs", "GET", summary="Request logs, newest first; continue with before=next_before", tag="logs",
       query=dict(before=INT, per_page=INT, **LOG_FILTERS))
def list_logs():
    page = log_queries.page(_filters(), row_id(request.args.get("before")), per_page(request.args))
    return jsonify(data=[log_dict(r) for r in page.items], **page.meta())


@route("/v1/logs/export.csv", "GET", summary="The filtered log as CSV, streamed", tag="logs", query=LOG_FILTERS, returns="text/csv")
def export_logs():
    return Response(stream_with_context(log_queries.csv_chunks(_filters())), mimetype="text/csv")


@route("/v1/logs/<request_id>", "GET", summary="One request with its decision trace", tag="logs")
def get_log(request_id: str):
    row = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
    if row is None:
        abort(404, f"No logged request {request_id}.")
    return jsonify(log_dict(row, trace=True))


@route("/v1/audit", "GET", summary="The audit log, newest first", tag="audit",
       query=dict(actor=STR, action=STR, target_type=STR, target_id=STR, **PAGE))
def list_audit():
    page = paginate(audit_query(request.args), page_number(request.args), per_page(request.args))
    return jsonify(data=[{"id": e.id, "actor": e.actor, "actor_id": e.actor_id, "action": e.action, "target_type": e.target_type,
                          "target_id": e.target_id, "before": e.before, "after": e.after, "ip": e.ip, "at": e.created_at.isoformat()}
                         for e in page.items], **page.meta())


@route("/v1/dashboard", "GET", summary="Totals, series and breakdown from rollups", tag="dashboard",
       query=dict(range=STR, by=STR))
def dashboard():
    return jsonify(dash.chart_data(dash.report(request.args.get("range", "day"), request.args.get("by", "model"))))
