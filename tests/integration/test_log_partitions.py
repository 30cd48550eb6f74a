"""Request logs partitioned by month on PostgreSQL: the migration moves existing rows into their
months keeping their ids, rows land in the right partition, the months ahead are created (taking
over what the default partition caught), retention drops whole months, and ingestion still writes
each request exactly once. Real PostgreSQL, a private database per test where the schema matters."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from controlplane import ledger
from controlplane import log_partitions as lp
from controlplane.extensions import db
from controlplane.models import LedgerEntry, RequestLog
from relay.usage import UsageEvent
from tests import factories
from tests.conftest import clean_tables
from tests.services import PostgresDatabase, unavailable
from workers import maintenance
from workers.usage import write_batch
from workers.usage_writes import _INSERT_LOGS, log_row

DAY = 86_400


def now_month() -> datetime:
    return lp.month_start(datetime.now(UTC))


def where(request_id: str) -> str:
    return db.session.execute(text("SELECT tableoid::regclass::text FROM request_logs WHERE request_id = :r"), {"r": request_id}).scalar()


def event(request_id: str, started: datetime, account_id=None, cost=0) -> UsageEvent:
    ts = started.replace(tzinfo=UTC).timestamp() if started.tzinfo is None else started.timestamp()
    return UsageEvent(request_id=request_id, started_at=ts, finished_at=ts + 1, endpoint="/v1/chat/completions", status=200,
                      account_id=account_id, model="gpt-4o-mini", input_tokens=3, cost=cost)


@pytest.fixture
def pg(postgres_app, redis_client):
    """The session's PostgreSQL app (migrated to the head), tables emptied."""
    clean_tables(postgres_app)
    with postgres_app.app_context():
        yield postgres_app


@pytest.fixture
def private_pg(tmp_path, redis_slot):
    """An app on a PostgreSQL database of this test's own, migrated only as far as the test says."""
    from controlplane.app import create_app
    from controlplane.settings import Settings
    from relay.cipher import Cipher
    from relay.settings import RelaySettings

    try:
        database = PostgresDatabase()
    except Exception as error:  # noqa: BLE001
        unavailable("PostgreSQL", error)
    key = Cipher.generate_key()
    settings = Settings(database_url=database.sqlalchemy_url, redis_url=redis_slot.url, secret_key="t", encryption_key=key,
                        instance_dir=tmp_path, testing=True,
                        relay=RelaySettings(redis_url=redis_slot.url, encryption_key=key, instance_dir=tmp_path))
    app = create_app(settings)
    try:
        with app.app_context():
            yield app
            db.session.remove()
            db.engine.dispose()
    finally:
        database.drop()


def test_the_migration_moves_existing_rows_into_their_months_and_keeps_their_ids(private_pg):
    upgrade(revision="0006i")
    month = now_month()
    rows = {"this_month": month + timedelta(days=1, hours=3), "two_months_ago": lp.add_months(month, -2) + timedelta(hours=5),
            "three_years_ago": lp.add_months(month, -36), "next_month": lp.add_months(month, 1) + timedelta(days=2)}
    for request_id, started in rows.items():
        db.session.execute(text(
            "INSERT INTO request_logs (request_id, started_at, finished_at, endpoint, stream, status, input_tokens, cache_read_tokens, "
            "cache_write_tokens, output_tokens, reasoning_tokens, usage_source, cost, trace) "
            "VALUES (:r, :s, :s, '/v1/chat/completions', false, 200, 1, 0, 0, 0, 0, 'upstream', 5, '[]')"), {"r": request_id, "s": started})
    db.session.commit()
    ids_before = dict(db.session.execute(text("SELECT request_id, id FROM request_logs")).all())
    db.session.commit()  # the migration runs on a connection of its own: hold no lock on the table

    upgrade()

    assert lp.is_partitioned(db.session)
    names = [p.name for p in lp.partitions(db.session)]
    # Every month from the oldest row's (at most 24 months back) to three months ahead.
    assert names == [lp.name_of(lp.add_months(month, n)) for n in range(-24, 4)]
    assert where("this_month") == lp.name_of(month)
    assert where("two_months_ago") == lp.name_of(lp.add_months(month, -2))
    assert where("next_month") == lp.name_of(lp.add_months(month, 1))
    assert where("three_years_ago") == lp.DEFAULT  # older than the history kept in partitions: retention empties it
    assert dict(db.session.execute(text("SELECT request_id, id FROM request_logs")).all()) == ids_before
    keys = dict(db.session.execute(text(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'request_logs'::regclass AND contype IN ('p', 'u')")).all())
    assert keys == {"request_logs_pkey": "PRIMARY KEY (id, started_at)", "request_logs_request_id_key": "UNIQUE (request_id, started_at)"}
    # The id sequence carries on after the old rows, owned by the new table.
    write_batch([event("after", datetime.now(UTC))])
    db.session.commit()
    assert db.session.scalar(select(RequestLog.id).where(RequestLog.request_id == "after")) > max(ids_before.values())
    assert db.session.scalar(text("SELECT pg_get_serial_sequence('request_logs', 'id')")) == "public.request_logs_id_seq"

    db.session.commit()
    downgrade(revision="0006i")  # and back: one plain table with every row
    assert not lp.is_partitioned(db.session)
    assert db.session.scalar(text("SELECT count(*) FROM request_logs")) == 5
    db.session.commit()
    upgrade()
    assert db.session.scalar(text("SELECT count(*) FROM request_logs")) == 5


def test_rows_land_in_their_month_and_a_new_month_takes_over_what_the_default_caught(pg):
    month = now_month()
    far = lp.add_months(month, 12) + timedelta(days=3)  # no partition that far ahead yet
    write_batch([event("now", datetime.now(UTC)), event("soon", lp.add_months(month, 2) + timedelta(days=1)), event("far", far)])
    db.session.commit()
    assert (where("now"), where("soon"), where("far")) == (lp.name_of(month), lp.name_of(lp.add_months(month, 2)), lp.DEFAULT)

    assert lp.ensure(db.session, now=far) == [lp.name_of(lp.add_months(far, n)) for n in range(4)]
    db.session.commit()
    assert where("far") == lp.name_of(lp.month_start(far))
    assert lp.ensure(db.session, now=far) == []  # idempotent
    for partition in lp.partitions(db.session):  # leave the shared database as the migration made it
        if partition.start > lp.add_months(month, lp.AHEAD_MONTHS):
            lp.drop(db.session, partition)
    db.session.commit()


def test_retention_drops_whole_months_and_deletes_only_the_defaults_strays(pg):
    user = factories.funded_user("1")
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=90)
    whole = lp.add_months(lp.month_start(cutoff), -1)  # a month entirely past retention
    straddling = lp.month_start(cutoff)  # the month the cutoff falls in
    for start in (whole, straddling):
        lp.create(db.session, start)
    db.session.commit()
    write_batch([event("whole_1", whole + timedelta(days=1), user.account_id, 10), event("whole_2", whole + timedelta(days=20), user.account_id, 10),
                 event("straddling_old", cutoff.replace(tzinfo=None) - timedelta(hours=1), user.account_id, 10),
                 event("straddling_new", cutoff.replace(tzinfo=None) + timedelta(hours=1), user.account_id, 10),
                 event("stray_old", lp.add_months(whole, -30), user.account_id, 10), event("recent", now, user.account_id, 10)])
    db.session.commit()
    assert where("stray_old") == lp.DEFAULT
    charges = db.session.scalar(select(func.count()).select_from(LedgerEntry))

    assert maintenance.prune_request_logs(90) == 3  # the whole month (2 rows) dropped, one stray deleted

    names = [p.name for p in lp.partitions(db.session)]
    assert lp.name_of(whole) not in names and lp.name_of(straddling) in names
    assert sorted(db.session.scalars(select(RequestLog.request_id))) == ["recent", "straddling_new", "straddling_old"]
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == charges  # the books stay
    assert maintenance.prune_request_logs(90) == 0
    lp.drop(db.session, lp.Partition(lp.name_of(straddling), straddling, lp.add_months(straddling, 1)))
    db.session.commit()


def test_ingestion_still_writes_each_request_once(pg):
    user = factories.funded_user("1")
    first = event("req_once", datetime.now(UTC), user.account_id, 25)
    assert write_batch([first, first]) == 1
    db.session.commit()
    assert write_batch([first]) == 0  # a replay of the event: found in its partition, skipped
    db.session.commit()
    # Behind the look-up, the database refuses the same request in the same partition …
    with pytest.raises(IntegrityError):
        db.session.execute(text("INSERT INTO request_logs (request_id, started_at, finished_at, endpoint, stream, status, input_tokens, "
                                "cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, usage_source, cost, trace) "
                                "SELECT request_id, started_at, finished_at, endpoint, stream, status, input_tokens, cache_read_tokens, "
                                "cache_write_tokens, output_tokens, reasoning_tokens, usage_source, cost, trace FROM request_logs "
                                "WHERE request_id = 'req_once'"))
    db.session.rollback()
    # … and the ledger (not partitioned) refuses a second charge for it whatever its start time says.
    moved = replace(first, started_at=first.started_at - 40 * DAY)
    with pytest.raises(IntegrityError):
        _INSERT_LOGS.run([log_row(moved)])  # the bulk path, without the look-up
        ledger.post_charges([(moved.account_id, moved.cost, moved.request_id, None)])
        db.session.flush()
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(RequestLog).where(RequestLog.request_id == "req_once")) == 1
