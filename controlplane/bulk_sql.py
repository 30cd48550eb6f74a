"""Inserting many rows fast on both back ends, ids known up front: PostgreSQL takes ids from the
table's sequence in one query and the rows through COPY; SQLite takes an executemany (in C) after
the highest id. Used by bulk seeding only (controlplane/bulk_customers.py, `ledger.open_accounts`);
the caller commits."""
from __future__ import annotations

from datetime import UTC

import orjson
from sqlalchemy import JSON, DateTime, func, insert, select, text

from controlplane.extensions import db


def _postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def allocate_ids(table, count: int) -> list[int]:
    if count <= 0:
        return []
    if _postgres():
        query = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)")
        return list(db.session.execute(query, {"table": table.name, "n": count}).scalars())
    # SQLite has one writer at a time; the caller's transaction holds the lock from its first write.
    start = (db.session.execute(select(func.max(table.c.id))).scalar() or 0) + 1
    return list(range(start, start + count))


def _naive_utc(value):
    return value.astimezone(UTC).replace(tzinfo=None) if value is not None and value.tzinfo else value


def _json_text(value):
    return None if value is None else orjson.dumps(value).decode()


def _converter(column):
    """How a Python value becomes what COPY wants for this column (what the column type's bind
    processing would do), or None when it goes as it is."""
    if isinstance(column.type, JSON):
        return _json_text
    if isinstance(column.type, DateTime) or isinstance(getattr(column.type, "impl", None), DateTime):
        return _naive_utc
    return None


def insert_rows(table, rows: list[dict]) -> list[int]:
    """Insert `rows` (dicts of column values; the same keys in each) with new ids; returns them in
    order. Column defaults the rows leave out are filled in once per call."""
    if not rows:
        return []
    ids = allocate_ids(table, len(rows))
    names = list(rows[0])
    for c in table.columns:
        if c.name in names or c.name == "id" or c.default is None:
            continue
        default = c.default.arg(None) if c.default.is_callable else c.default.arg
        for row in rows:
            row[c.name] = default
        names.append(c.name)
    if _postgres():
        converters = [(n, _converter(table.c[n])) for n in names]
        raw = db.session.connection().connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} (id, {', '.join(names)}) FROM STDIN") as copy:
            for row_id, row in zip(ids, rows, strict=True):
                copy.write_row((row_id, *(row[n] if convert is None else convert(row[n]) for n, convert in converters)))
    else:
        db.session.execute(insert(table), [{"id": i, **r} for i, r in zip(ids, rows, strict=True)])
    return ids
