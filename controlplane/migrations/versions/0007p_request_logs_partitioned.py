"""request_logs partitioned by month on PostgreSQL (SQLite unchanged)

The table is rebuilt as `PARTITION BY RANGE (started_at)` with the same columns, defaults, id
sequence and indexes; the primary key becomes (id, started_at) and request ids are unique per
(request_id, started_at), as a partitioned table requires (controlplane/log_partitions.py says why
that still keeps ingestion exactly-once). Existing rows are copied into month partitions — one for
every month from the oldest row's (at most 24 months back) to three months ahead; older rows go to
the default partition, which retention then empties. The copy runs in this migration's transaction:
ingestion waits for it (its events stay in the Redis stream), so on a large table plan a window.

Revision ID: 0007p
Revises: 0006i
Create Date: 2026-12-03 22:45:00.000000

"""
from datetime import UTC, datetime

from alembic import op
from sqlalchemy import text

from controlplane import log_partitions as lp

# revision identifiers, used by Alembic.
revision = '0007p'
down_revision = '0006i'
branch_labels = None
depends_on = None

OLD = "request_logs_unpartitioned"
HISTORY_MONTHS = 24  # months of existing rows that get partitions of their own


def _constraints_and_indexes(bind, table: str) -> tuple[list[str], list[tuple[str, str]]]:
    constraints = list(bind.execute(text("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:t) AND contype IN ('p', 'u')"),
                                    {"t": table}).scalars())
    indexes = [(name, definition) for name, definition in bind.execute(text(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = to_regclass(:t) AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)"), {"t": table})]
    return constraints, indexes


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    sequence = bind.execute(text("SELECT pg_get_serial_sequence('request_logs', 'id')")).scalar()
    constraints, indexes = _constraints_and_indexes(bind, "request_logs")
    op.execute(f'ALTER TABLE request_logs RENAME TO "{OLD}"')
    for name in constraints:
        op.execute(f'ALTER TABLE "{OLD}" DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        op.execute(f'DROP INDEX "{name}"')
    if sequence:  # the id sequence outlives the old table and goes on numbering the new one
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute(f'CREATE TABLE request_logs (LIKE "{OLD}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE) '
               'PARTITION BY RANGE (started_at)')
    op.execute(f'CREATE TABLE "{lp.DEFAULT}" PARTITION OF request_logs DEFAULT')
    now = lp.month_start(datetime.now(UTC))
    oldest = bind.execute(text(f'SELECT min(started_at) FROM "{OLD}"')).scalar()  # nosec B608 - partition and table names come from constants and dates, never from input
    first = max(lp.month_start(oldest), lp.add_months(now, -HISTORY_MONTHS)) if oldest else now
    months = 0
    while lp.add_months(first, months) < now:
        lp.create(bind, lp.add_months(first, months))
        months += 1
    lp.ensure(bind, now, lock_timeout=None)
    op.execute(f'INSERT INTO request_logs SELECT * FROM "{OLD}"')  # nosec B608 - partition and table names come from constants and dates, never from input
    op.execute(f'DROP TABLE "{OLD}"')
    # Keys and indexes after the copy: one bulk build per partition beats maintaining them row by row.
    op.execute("ALTER TABLE request_logs ADD CONSTRAINT request_logs_pkey PRIMARY KEY (id, started_at)")
    op.execute("ALTER TABLE request_logs ADD CONSTRAINT request_logs_request_id_key UNIQUE (request_id, started_at)")
    for _, definition in indexes:  # the same definitions, now on the partitioned table (and each partition)
        op.execute(definition)
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY request_logs.id")


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    sequence = bind.execute(text("SELECT pg_get_serial_sequence('request_logs', 'id')")).scalar()
    _, indexes = _constraints_and_indexes(bind, "request_logs")
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute(f'ALTER TABLE request_logs RENAME TO "{OLD}"')
    for name, _ in indexes:
        op.execute(f'DROP INDEX "{name}"')
    op.execute(f'CREATE TABLE request_logs (LIKE "{OLD}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)')
    op.execute(f'INSERT INTO request_logs SELECT * FROM "{OLD}"')  # nosec B608 - partition and table names come from constants and dates, never from input
    op.execute(f'DROP TABLE "{OLD}" CASCADE')
    op.execute("ALTER TABLE request_logs ADD CONSTRAINT request_logs_pkey PRIMARY KEY (id)")
    op.execute("ALTER TABLE request_logs ADD CONSTRAINT request_logs_request_id_key UNIQUE (request_id)")
    for _, definition in indexes:
        op.execute(definition.replace(" ON ONLY ", " ON "))
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY request_logs.id")
