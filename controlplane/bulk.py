"""Many rows into one table by the driver's fastest route, inside the session's transaction.

PostgreSQL: `COPY ... FROM STDIN` (psycopg formats the rows in C); SQLite: the sqlite3 module's own
`executemany`. Both skip SQLAlchemy's per-row parameter processing, which cost more per usage event
than the database's own work, so rows come ready to store: timestamps as `utc_text` (the text
`UTCDateTime` stores on SQLite, which PostgreSQL reads as the same `timestamp`), JSON as `json_text`.
Driver errors come back as SQLAlchemy's exceptions (an `IntegrityError` stays one), so callers handle
them like any other statement's. `one_of` keeps the batch's lookups short queries on PostgreSQL.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import orjson
from sqlalchemy import JSON, Table, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

from controlplane.extensions import db


def one_of(column, name: str, dialect: str):
    """`column` is one of the list bound to `name`. On PostgreSQL `= ANY(array)`, one parameter: an
    expanding IN of hundreds of values is a new, long query text for psycopg to parse every time."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def json_text(value) -> str:
    """A JSON column's value as the text to store."""
    return orjson.dumps(value).decode()


_SECONDS: dict[int, str] = {}  # whole seconds already formatted: a batch's events share a few


def utc_text(ts: float) -> str:
    """Unix time as `UTCDateTime` stores it ("YYYY-MM-DD HH:MM:SS.ffffff", UTC), rounded to the
    microsecond exactly as `datetime.fromtimestamp` rounds (the fraction × 10⁶, half to even), in a
    tenth of the time the datetime and its bind processors take."""
    whole = int(ts // 1)
    micro = round((ts - whole) * 1_000_000)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    prefix = _SECONDS.get(whole)
    if prefix is None:
        if len(_SECONDS) >= 4_096:
            _SECONDS.clear()
        prefix = _SECONDS[whole] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
    return f"{prefix}.{micro:06d}"


class BulkInsert:
    """An INSERT of `columns` of `table`; rows are tuples in that order, ready to store (see above)."""

    def __init__(self, table: Table, columns: Sequence[str]):
        self.table = table
        self.columns = tuple(columns)
        self._sql: dict[str, str] = {}

    def _statement(self, dialect) -> str:
        sql = self._sql.get(dialect.name)
        if sql is None:
            preparer = dialect.identifier_preparer
            names = ", ".join(preparer.quote(c) for c in self.columns)
            table = preparer.format_table(self.table)
            if dialect.name == "postgresql":
                sql = f"COPY {table} ({names}) FROM STDIN"
            else:
                # Table and column names come from our metadata, quoted by the dialect; values are bound.
                sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in self.columns)})"  # nosec B608
            self._sql[dialect.name] = sql
        return sql

    def run(self, rows: list[tuple]) -> None:
        if not rows:
            return
        connection = db.session.connection()
        dialect = connection.dialect
        sql = self._statement(dialect)
        raw = connection.connection.driver_connection
        try:
            if dialect.name == "postgresql":
                with raw.cursor() as cursor, cursor.copy(sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cursor = raw.cursor()
                try:
                    cursor.executemany(sql, rows)
                finally:
                    cursor.close()
        except dialect.loaded_dbapi.Error as error:
            lost = dialect.is_disconnect(error, raw, None)
            if lost:
                connection.invalidate(error)
            raise DBAPIError.instance(sql, None, error, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect) from error


class BulkUpdate:
    """An UPDATE of `columns` of many rows of `table`, each found by its `id`; rows are tuples of
    (id, *values), values ready to store. PostgreSQL: one statement over arrays (`unnest`); SQLite:
    sqlite3's `executemany`."""

    def __init__(self, table: Table, columns: Sequence[str]):
        self.table = table
        self.columns = tuple(columns)
        self._sql: dict[str, str] = {}

    def _statement(self, dialect) -> str:
        sql = self._sql.get(dialect.name)
        if sql is None:
            quote = dialect.identifier_preparer.quote
            table = dialect.identifier_preparer.format_table(self.table)
            if dialect.name == "postgresql":
                arrays = ", ".join(f"%s::{_array_type(self.table.c[c].type, dialect)}" for c in ("id", *self.columns))
                names = ", ".join(quote(c) for c in ("id", *self.columns))
                sets = ", ".join(f"{quote(c)} = v.{quote(c)}" for c in self.columns)
                # Names from our metadata, quoted by the dialect; values are bound.
                sql = f"UPDATE {table} AS t SET {sets} FROM unnest({arrays}) AS v({names}) WHERE t.id = v.id"  # nosec B608
            else:
                sets = ", ".join(f"{quote(c)} = ?" for c in self.columns)
                sql = f"UPDATE {table} SET {sets} WHERE id = ?"  # as above  # nosec B608
            self._sql[dialect.name] = sql
        return sql

    def run(self, rows: list[tuple]) -> None:
        if not rows:
            return
        connection = db.session.connection()
        dialect = connection.dialect
        sql = self._statement(dialect)
        raw = connection.connection.driver_connection
        try:
            cursor = raw.cursor()
            try:
                if dialect.name == "postgresql":
                    cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])
                else:
                    cursor.executemany(sql, [(*row[1:], row[0]) for row in rows])
            finally:
                cursor.close()
        except dialect.loaded_dbapi.Error as error:
            lost = dialect.is_disconnect(error, raw, None)
            if lost:
                connection.invalidate(error)
            raise DBAPIError.instance(sql, None, error, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect) from error


def _array_type(type_, dialect) -> str:
    if isinstance(type_.dialect_impl(dialect), JSON) or isinstance(type_, JSON):
        return "text[]::jsonb[]"  # the values come as `json_text`
    return type_.dialect_impl(dialect).compile(dialect) + "[]"


__all__ = ["BulkInsert", "BulkUpdate", "json_text", "one_of", "utc_text"]
