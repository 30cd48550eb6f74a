"""The request log: filters from a query string, cursor pages, and a streaming CSV export.

Filters are parsed once into `LogFilters` (with the errors a person can fix) and turned into SQL;
the console, the CSV export and the admin API share them.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, or_, select

from controlplane import csv_cells
from controlplane.extensions import db
from controlplane.models import ApiKey, Channel, RequestLog, User, utcnow
from controlplane.queries.pagination import CursorPage, row_id

QUICK_RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
STATUS_CLASSES = {"2xx": (200, 300), "4xx": (400, 500), "5xx": (500, 600), "errors": (400, 1000)}
EXPORT_CHUNK = 1_000  # rows fetched per round trip while streaming


def _time(value: str | None, name: str, errors: dict) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        errors[name] = "Enter a date and time like 2026-05-03T14:00 (UTC)."
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class LogFilters:
    since: datetime | None = None
    until: datetime | None = None
    user: str = ""
    key: str = ""
    model: str = ""
    channel: str = ""
    status: str = ""
    error_code: str = ""
    range: str = ""
    errors: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args) -> "LogFilters":
        errors: dict = {}
        text = {k: (args.get(k) or "").strip()[:200] for k in ("user", "key", "model", "channel", "status", "error_code", "range")}
        found = cls(since=_time(args.get("since"), "since", errors), until=_time(args.get("until"), "until", errors), errors=errors, **text)
        if found.range in QUICK_RANGES and found.since is None:
            found.since = utcnow() - QUICK_RANGES[found.range]
        if found.status and not (found.status in STATUS_CLASSES or _status_code(found.status) is not None):
            errors["status"] = "Enter a status code (e.g. 429) or a class: 2xx, 4xx, 5xx, errors."
        if found.channel and row_id(found.channel) is None:
            errors["channel"] = "Choose a channel."
        return found

    def args(self) -> dict:
        """The filters as query-string arguments (for links that keep them)."""
        out = {k: getattr(self, k) for k in ("user", "key", "model", "channel", "status", "error_code", "range") if getattr(self, k)}
        if self.since and not self.range:
            out["since"] = self.since.strftime("%Y-%m-%dT%H:%M")
        if self.until:
            out["until"] = self.until.strftime("%Y-%m-%dT%H:%M")
        return out

    def _user_id(self) -> int:
        if self.user.isdigit():
            return row_id(self.user) or -1
        return db.session.scalar(select(User.id).where(User.email == self.user.lower())) or -1

    def _key_id(self) -> int:
        if self.key.isdigit():
            return row_id(self.key) or -1
        return db.session.scalar(select(ApiKey.id).where(ApiKey.prefix == self.key.rstrip("…"))) or -1

    def apply(self, query):
        if self.since:
            query = query.where(RequestLog.started_at >= self.since)
        if self.until:
            query = query.where(RequestLog.started_at < self.until)
        if self.user:
            query = query.where(RequestLog.user_id == self._user_id())
        if self.key:
            query = query.where(RequestLog.api_key_id == self._key_id())
        if self.model:
            query = query.where(RequestLog.model == self.model)
        if row_id(self.channel) is not None:
            query = query.where(RequestLog.channel_id == row_id(self.channel))
        if self.status in STATUS_CLASSES:
            low, high = STATUS_CLASSES[self.status]
            query = query.where(RequestLog.status >= low, RequestLog.status < high)
        elif _status_code(self.status) is not None:
            query = query.where(RequestLog.status == _status_code(self.status))
        if self.error_code:
            query = query.where(RequestLog.error_code == self.error_code)
        return query


def _status_code(text: str) -> int | None:
    code = row_id(text)
    return code if code is not None and code <= 999 else None


def page(filters: LogFilters, before: int | None, size: int = 50) -> CursorPage:
    """Newest first by start time; `before` is the id of the last row seen (a keyset cursor on
    (started_at, id), so page 20,000 costs what page 1 does)."""
    L = RequestLog
    query = filters.apply(select(L)).order_by(L.started_at.desc(), L.id.desc())
    if before:
        started = db.session.scalar(select(L.started_at).where(L.id == before))
        if started is not None:
            query = query.where(or_(L.started_at < started, and_(L.started_at == started, L.id < before)))
    rows = list(db.session.scalars(query.limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    return CursorPage(items=rows, next_before=rows[-1].id if more else None, before=before)


def names_for(rows) -> tuple[dict[int, str], dict[int, str]]:
    """Emails and channel names for the ids on one page (two small queries instead of joins)."""
    user_ids = {r.user_id for r in rows if r.user_id}
    channel_ids = {r.channel_id for r in rows if r.channel_id}
    emails = dict(db.session.execute(select(User.id, User.email).where(User.id.in_(user_ids))).all()) if user_ids else {}
    names = dict(db.session.execute(select(Channel.id, Channel.name).where(Channel.id.in_(channel_ids))).all()) if channel_ids else {}
    return emails, names


CSV_COLUMNS = ("request_id", "started_at", "user_id", "user_email", "api_key_id", "model", "upstream_model", "channel_id", "channel_name",
               "endpoint", "stream", "status", "error_code", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
               "reasoning_tokens", "cost_usd", "cost_micro_usd", "latency_ms", "ttft_ms", "client_ip")


def csv_chunks(filters: LogFilters, chunk_bytes: int = 64 * 1024):
    """Yield the filtered log as CSV text, a chunk at a time, reading rows in batches (a server-side
    cursor on PostgreSQL), so memory stays flat however many rows match."""
    L = RequestLog
    query = filters.apply(
        select(L.request_id, L.started_at, L.user_id, User.email, L.api_key_id, L.model, L.upstream_model, L.channel_id, Channel.name,
               L.endpoint, L.stream, L.status, L.error_code, L.input_tokens, L.cache_read_tokens, L.cache_write_tokens, L.output_tokens,
               L.reasoning_tokens, L.cost, L.latency_ms, L.ttft_ms, L.client_ip)
        .outerjoin(User, User.id == L.user_id).outerjoin(Channel, Channel.id == L.channel_id)
    ).order_by(L.started_at.desc(), L.id.desc())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    result = db.session.execute(query.execution_options(yield_per=EXPORT_CHUNK))
    for row in result:
        values = list(row)
        values[1] = values[1].isoformat() if values[1] else ""
        values[10] = csv_cells.flag(values[10])
        values[18:19] = [csv_cells.usd(values[18]), int(values[18] or 0)]
        writer.writerow([csv_cells.cell(v) for v in values])
        if buffer.tell() >= chunk_bytes:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
