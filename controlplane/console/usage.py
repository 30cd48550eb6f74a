"""Usage: trends as charts (from rollups), breakdowns by key and model, the per-request table,
one request's details, and a CSV export that streams."""
from __future__ import annotations

import csv
import io
from datetime import datetime

from flask import Blueprint, Response, abort, jsonify, render_template, request, stream_with_context
from sqlalchemy import and_, or_, select

from controlplane.console.access import console_view, current_scope, key_or_404, log_or_404
from controlplane.console.usage_data import RANGES, breakdown, range_start, series
from controlplane import csv_cells
from controlplane.extensions import db
from controlplane.models import ApiKey, RequestLog, UsageRollup
from controlplane.queries import pagination

bp = Blueprint("usage", __name__, url_prefix="/usage")
PAGE = 50
EXPORT_CHUNK = 1000


class Filters:
    """The page's query string, checked: a key outside the scope is a 404."""

    def __init__(self, args):
        self.range = args.get("range") if args.get("range") in RANGES else "7d"
        self.by = args.get("by") if args.get("by") in ("model", "key") else "model"
        self.key_id = pagination.row_id(args.get("key")) if args.get("key") else None
        self.model = (args.get("model") or "").strip()[:200] or None
        self.status = args.get("status") if args.get("status") in ("ok", "error") else None
        if self.key_id is not None:
            key_or_404(self.key_id, include_deleted=True)
        self.granularity, self.since = range_start(self.range)

    def rollup_clauses(self) -> list:
        clauses = [current_scope().rollups_clause()]
        if self.key_id is not None:
            clauses.append(UsageRollup.api_key_id == self.key_id)
        if self.model:
            clauses.append(UsageRollup.model == self.model)
        return clauses

    def log_clauses(self) -> list:
        clauses = [current_scope().logs_clause(), RequestLog.started_at >= self.since]
        if self.key_id is not None:
            clauses.append(RequestLog.api_key_id == self.key_id)
        if self.model:
            clauses.append(RequestLog.model == self.model)
        if self.status == "ok":
            clauses.append(RequestLog.status < 400)
        elif self.status == "error":
            clauses.append(RequestLog.status >= 400)
        return clauses

    def query(self, **changes) -> dict:
        values = {"range": self.range, "by": self.by, "key": self.key_id, "model": self.model, "status": self.status}
        values.update(changes)
        return {k: v for k, v in values.items() if v is not None}


def key_names() -> dict[int, str]:
    """Every key the person may see in this account (deleted ones too: old requests name them)."""
    rows = db.session.execute(select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(current_scope().keys_clause(include_deleted=True)))
    return {i: (name or prefix + "…") for i, name, prefix in rows}


def _after(cursor: str | None):
    """Keyset pagination: rows older than "<iso time>_<id>"."""
    if not cursor or "_" not in cursor:
        return None
    stamp, _, row_id = cursor.rpartition("_")
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        abort(400)
    last = pagination.row_id(row_id)
    if last is None:
        abort(400)
    return or_(RequestLog.started_at < moment, and_(RequestLog.started_at == moment, RequestLog.id < last))


def _page_of_logs(filters: Filters, cursor: str | None, limit: int):
    query = select(RequestLog).where(*filters.log_clauses())
    after = _after(cursor)
    if after is not None:
        query = query.where(after)
    return list(db.session.scalars(query.order_by(RequestLog.started_at.desc(), RequestLog.id.desc()).limit(limit)))


@bp.get("/")
@console_view
def index():
    filters = Filters(request.args)
    clauses = filters.rollup_clauses()
    logs = _page_of_logs(filters, request.args.get("before"), PAGE + 1)
    more = len(logs) > PAGE
    logs = logs[:PAGE]
    cursor = f"{logs[-1].started_at.isoformat()}_{logs[-1].id}" if more else None
    models = sorted(m for (m,) in db.session.execute(select(UsageRollup.model).where(current_scope().rollups_clause()).distinct()) if m)
    summary, by_key, by_model = breakdown(clauses, filters.since)
    return render_template("console/usage/index.html", f=filters, ranges=RANGES, summary=summary, by_key=by_key, by_model=by_model,
                           chart=series(clauses, filters.since, filters.granularity, None), logs=logs, cursor=cursor,
                           names=key_names(), models=models)


@bp.get("/series.json")
@console_view
def series_json():
    filters = Filters(request.args)
    data = series(filters.rollup_clauses(), filters.since, filters.granularity, filters.by)
    if filters.by == "key":
        names = key_names()
        for s in data["series"]:
            s["name"] = names.get(int(s["name"]), s["name"]) if s["name"].isdigit() else s["name"]
    return jsonify(data)


@bp.get("/requests/<request_id>")
@console_view
def detail(request_id: str):
    row = log_or_404(request_id)
    return render_template("console/usage/detail.html", log=row, names=key_names())


HEADER = ["started_at", "request_id", "key", "model", "endpoint", "stream", "status", "error_code", "input_tokens",
          "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "cost_micro_usd", "latency_ms", "ttft_ms"]


def _csv_rows(filters: Filters, names: dict):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    cursor = None
    while True:
        rows = _page_of_logs(filters, cursor, EXPORT_CHUNK)
        for r in rows:
            writer.writerow([csv_cells.cell(v) for v in (
                r.started_at.isoformat(), r.request_id, names.get(r.api_key_id, ""), r.model or "", r.endpoint, csv_cells.flag(r.stream),
                r.status, r.error_code or "", r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.output_tokens, r.reasoning_tokens,
                csv_cells.usd(r.cost), int(r.cost or 0), r.latency_ms if r.latency_ms is not None else "", r.ttft_ms if r.ttft_ms is not None else "")])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < EXPORT_CHUNK:
            return
        cursor = f"{rows[-1].started_at.isoformat()}_{rows[-1].id}"


@bp.get("/export.csv")
@console_view
def export():
    filters = Filters(request.args)
    names = key_names()
    stamp = filters.since.strftime("%Y%m%d")
    return Response(stream_with_context(_csv_rows(filters, names)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="usage-{current_scope().account.id}-since-{stamp}.csv"',
                             "Cache-Control": "no-store"})
