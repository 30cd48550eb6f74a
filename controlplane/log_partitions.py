"""Request logs on PostgreSQL: one partition per calendar month of `started_at` (UTC), so retention
drops a month's table instead of deleting its rows one by one (no bloat, no vacuum debt, no long
delete holding locks while ingestion writes). SQLite keeps one plain table.

The layout (made by migration 0007p): `request_logs` is partitioned by range on `started_at`;
`request_logs_pYYYYMM` holds one month; `request_logs_default` catches a row no month partition
covers (a far-off clock, an event replayed after its month was dropped), so ingestion never fails
for want of a partition. The months ahead are created by the scheduler (`ensure`, daily) and at
upgrade; a month created while the default partition holds rows of it takes them over.

A partitioned table's unique constraints must contain the partition key: the primary key is
(id, started_at) and request ids are unique per (request_id, started_at). A replayed usage event
carries the started_at of its first delivery, so a replay still collides; ingestion also looks the
request id up in every partition before writing (workers/usage_writes.py), and a charge is unique
per request id in the ledger, which is not partitioned.

Every function takes a SQLAlchemy Connection or Session and leaves committing to the caller.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text

PARENT = "request_logs"
DEFAULT = "request_logs_default"
AHEAD_MONTHS = 3  # this month and the next three always exist
# DDL on a partition waits at most this long for its lock: a long reader must not make every insert
# queue behind the waiting ALTER/DROP. The scheduler tries again on its next run.
LOCK_TIMEOUT = "5s"
_BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime  # naive UTC, inclusive
    end: datetime  # naive UTC, exclusive


def month_start(moment: datetime) -> datetime:
    """The first instant of `moment`'s month, naive UTC (how started_at is stored)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)


def name_of(start: datetime) -> str:
    return f"{PARENT}_p{start:%Y%m}"


def _dialect(bind) -> str:
    get_bind = getattr(bind, "get_bind", None)  # a Session; a Connection has .dialect
    return (get_bind() if get_bind else bind).dialect.name


def is_partitioned(bind) -> bool:
    if _dialect(bind) != "postgresql":
        return False
    return bind.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": PARENT}).scalar() == "p"


def partitions(bind) -> list[Partition]:
    """The month partitions, oldest first (the default partition is not one of them)."""
    rows = bind.execute(text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:t)"), {"t": PARENT}).all()
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match:
            found.append(Partition(name, datetime.fromisoformat(match[1]), datetime.fromisoformat(match[2])))
    return sorted(found, key=lambda p: p.start)


def _literal(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def create(bind, start: datetime) -> str:
    """Create the partition of the month starting at `start`, moving in the rows the default
    partition holds for it (PostgreSQL refuses to attach over them otherwise)."""
    start = month_start(start)
    end, name = add_months(start, 1), name_of(start)
    low, high = _literal(start), _literal(end)
    stray = bind.execute(text(f'SELECT EXISTS (SELECT 1 FROM "{DEFAULT}" WHERE started_at >= :low AND started_at < :high)'),  # nosec B608 - partition and table names come from constants and dates, never from input
                         {"low": start, "high": end}).scalar()
    if not stray:
        bind.execute(text(f"CREATE TABLE \"{name}\" PARTITION OF \"{PARENT}\" FOR VALUES FROM ('{low}') TO ('{high}')"))
        return name
    bind.execute(text(f'CREATE TABLE "{name}" (LIKE "{PARENT}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'))
    bind.execute(text(f'WITH moved AS (DELETE FROM "{DEFAULT}" WHERE started_at >= :low AND started_at < :high RETURNING *) '  # nosec B608 - partition and table names come from constants and dates, never from input
                      f'INSERT INTO "{name}" SELECT * FROM moved'), {"low": start, "high": end})
    bind.execute(text(f"ALTER TABLE \"{PARENT}\" ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{low}') TO ('{high}')"))
    return name


def ensure(bind, now: datetime | None = None, ahead: int = AHEAD_MONTHS, lock_timeout: str | None = LOCK_TIMEOUT) -> list[str]:
    """Create this month's partition and the next `ahead` months' where missing; returns the names
    created. Nothing on SQLite or an unpartitioned table. `lock_timeout` holds for the rest of the
    caller's transaction (None: wait as long as it takes, as a migration does)."""
    if not is_partitioned(bind):
        return []
    if lock_timeout:
        bind.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
    first = month_start(now or datetime.now(UTC))
    have = {p.start for p in partitions(bind)}
    return [create(bind, start) for start in (add_months(first, i) for i in range(ahead + 1)) if start not in have]


def expired(bind, cutoff: datetime) -> list[Partition]:
    """Month partitions whose every row started before `cutoff` (naive UTC)."""
    if cutoff.tzinfo is not None:
        cutoff = cutoff.astimezone(UTC).replace(tzinfo=None)
    return [p for p in partitions(bind) if p.end <= cutoff]


def drop(bind, partition: Partition) -> int:
    """Drop one month partition; returns how many rows it held."""
    bind.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    rows = bind.execute(text(f'SELECT count(*) FROM "{partition.name}"')).scalar() or 0  # nosec B608 - partition and table names come from constants and dates, never from input
    bind.execute(text(f'DROP TABLE "{partition.name}"'))
    return int(rows)


_PARTITION_NAME = re.compile(rf"^{PARENT}_(p\d{{6}}|default)$")


def is_partition_name(name: str | None) -> bool:
    return bool(name and _PARTITION_NAME.match(name))


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    """Alembic's `include_name` hook: the month partitions are not in the models (they come and go
    with time), so autogenerate must neither create nor drop them."""
    return not (type_ == "table" and is_partition_name(name))


def include_object_for(dialect: str):
    """Alembic's `include_object` hook: on PostgreSQL the unique constraint on request ids carries
    the partition key, (request_id, started_at), where the models (and SQLite) say request_id alone;
    autogenerate must not try to turn one into the other."""
    def include_object(obj, name, type_, reflected, compare_to) -> bool:
        table = getattr(obj, "table", None)
        return not (dialect == "postgresql" and type_ == "unique_constraint" and getattr(table, "name", None) == PARENT)
    return include_object
