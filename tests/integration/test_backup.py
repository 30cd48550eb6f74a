"""Backup and restore, as an operator runs them: customers charged through the real relay (some
charges ingested, some still in the usage stream, one dead-lettered), `switchboard backup create`,
then `switchboard backup restore` into a fresh PostgreSQL database and a fresh Redis database. The
restored books reconcile to zero, every request and charge is there exactly once, and a relay on the
restored Redis serves the old keys and bills them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from controlplane import dead_letters, ledger
from controlplane.extensions import db
from controlplane.models import Account, LedgerEntry, RequestLog
from relay.quota import Quota
from relay.usage import USAGE_STREAMS
from tests import factories
from tests.conftest import build_app, clean_tables
from tests.gateway import ROOT
from tests.relay_harness import Relay, assert_money_consistent, ingest
from tests.services import PostgresDatabase, RedisSlot, unavailable
from workers import usage as usage_worker


@pytest.fixture
def source(postgres_app, redis_client):
    clean_tables(postgres_app)
    with postgres_app.app_context():
        yield postgres_app


@pytest.fixture
def fresh(tmp_path):
    """A PostgreSQL database and a Redis database nobody has used."""
    try:
        database, slot = PostgresDatabase(), RedisSlot()
    except Exception as error:  # noqa: BLE001
        unavailable("PostgreSQL or Redis", error)
    yield database, slot
    slot.release()
    database.drop()


def cli(*args: str, database_url: str, redis_url: str, instance, key: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis_url, SWITCHBOARD_INSTANCE=str(instance),
               SWITCHBOARD_ENCRYPTION_KEY=key, SWITCHBOARD_SECRET_KEY="x")
    return subprocess.run([sys.executable, "-m", "controlplane", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def books() -> dict:
    """What must survive: every request log, every ledger entry, every balance."""
    return {"logs": sorted(db.session.execute(select(RequestLog.request_id, RequestLog.cost)).all()),
            "entries": sorted(db.session.execute(select(LedgerEntry.kind, LedgerEntry.request_id, LedgerEntry.amount)).all(), key=str),
            "balances": dict(db.session.execute(select(Account.id, Account.balance)).all())}


def dead_letter_one_pending_event(redis) -> str:
    """What ingestion does with an event the database refuses: into the dead letters, off the stream."""
    entry_id, fields = redis.xrange(USAGE_STREAMS[0], count=1)[0]
    out = usage_worker.Outcome(dead=[(usage_worker.Pending(entry_id, fields), "IntegrityError: refused for the test")])
    usage_worker.ensure_group(redis)
    usage_worker.acknowledge(redis, out)
    return entry_id.decode()


def test_a_backup_restored_into_fresh_databases_reconciles_to_zero(source, upstream, redis_client, fresh, tmp_path):
    factories.price("gpt-4o-mini", input="3", output="15")
    factories.channel(upstream.url)
    relay = Relay(source)
    customers = []
    for n in range(3):
        user = factories.funded_user("2", email=f"backup{n}@example.com")
        customers.append((user, factories.api_key(user)[1]))
    for _, key in customers:
        for _ in range(2):
            assert relay.chat(key).status_code == 200
    ingest()
    for _, key in customers[:2]:  # settled in Redis, not yet in SQL at backup time
        assert relay.chat(key).status_code == 200
    assert redis_client.xlen(USAGE_STREAMS[0]) == 2
    settings = source.config["SWITCHBOARD"]
    key = settings.encryption_key
    database, slot = fresh

    made = cli("backup", "create", str(tmp_path / "backup"), "--json", database_url=settings.database_url, redis_url=settings.redis_url,
               instance=tmp_path / "source", key=key)
    assert made.returncode == 0, made.stderr
    manifest = json.loads(made.stdout)
    assert manifest["database"] == "postgresql" and manifest["streams"] == {USAGE_STREAMS[0]: 2, dead_letters.DEAD_STREAM: 0}

    ingest()  # what the source's books came to: every charge in SQL
    expected = books()
    assert len(expected["logs"]) == 8
    accounts = [user.account_id for user, _ in customers]  # plain ids: the rows belong to the source's session

    restored = cli("backup", "restore", str(tmp_path / "backup"), "--json", database_url=database.sqlalchemy_url, redis_url=slot.url,
                   instance=tmp_path / "restored", key=key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    report = json.loads(restored.stdout)
    assert report["ingested"] == 2 and report["reconcile"]["consistent"] and report["reconcile"]["findings"] == []

    again = cli("backup", "restore", str(tmp_path / "backup"), database_url=database.sqlalchemy_url, redis_url=slot.url,
                instance=tmp_path / "restored", key=key)
    assert again.returncode == 1 and "not empty" in again.stderr  # never over live data

    target = build_app(database.sqlalchemy_url, slot.url, tmp_path / "restored", encryption_key=key)
    with target.app_context():
        assert books() == expected
        quota = Quota(slot.client)
        for account_id in accounts:
            assert quota.account(account_id)[0] == ledger.stored_balance(account_id) == ledger.sum_of_entries(account_id)
        # The restored Redis knows every key: a relay on it serves and bills the old customers.
        restored_relay = Relay(target)
        before = ledger.stored_balance(accounts[2])
        assert restored_relay.chat(customers[2][1]).status_code == 200
        assert_money_consistent(slot.client)
        assert ledger.stored_balance(accounts[2]) < before
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize("copies", [1, 2], ids=["once", "twice"])
def test_dead_letters_come_back_as_dead_letters_with_their_charges_pending(source, upstream, redis_client, fresh, tmp_path, copies):
    """`twice`: the event was dead-lettered twice (with the money spread over buckets, a crash between
    adding the letter and acknowledging the entry does that): its charge comes off the restored live
    balance once."""
    factories.price("gpt-4o-mini", input="3", output="15")
    factories.channel(upstream.url)
    relay = Relay(source)
    user = factories.funded_user("2", email="dead@example.com")
    key = factories.api_key(user)[1]
    assert relay.chat(key).status_code == 200
    assert relay.chat(key).status_code == 200
    dead_id = dead_letter_one_pending_event(redis_client)
    for _ in range(copies - 1):
        [(_, letter)] = redis_client.xrange(dead_letters.DEAD_STREAM)
        redis_client.xadd(dead_letters.DEAD_STREAM, letter)
    settings = source.config["SWITCHBOARD"]
    database, slot = fresh
    live_before = Quota(redis_client).account(user.account_id)[0]

    made = cli("backup", "create", str(tmp_path / "b"), database_url=settings.database_url, redis_url=settings.redis_url,
               instance=tmp_path / "s", key=settings.encryption_key)
    assert made.returncode == 0, made.stderr
    restored = cli("backup", "restore", str(tmp_path / "b"), "--json", database_url=database.sqlalchemy_url, redis_url=slot.url,
                   instance=tmp_path / "r", key=settings.encryption_key)
    report = json.loads(restored.stdout)
    # The dead letter needs an operator, as it did before: that is the only finding.
    assert restored.returncode == 3 and [f["what"] for f in report["reconcile"]["findings"]] == ["dead_letters"], restored.stdout
    assert [letter.source_id for letter in dead_letters.newest(slot.client)[0]] == [dead_id] * copies
    assert report["ingested"] == 1  # the other request, still in the stream at backup time
    assert Quota(slot.client).account(user.account_id)[0] == live_before  # the dead letter's charge still off the live balance


def test_on_sqlite_the_same_commands_copy_the_file_online(app, upstream, redis_client, tmp_path):
    factories.price("gpt-4o-mini", input="3", output="15")
    factories.channel(upstream.url)
    user = factories.funded_user("2", email="lite@example.com")
    key = factories.api_key(user)[1]
    relay = Relay(app)
    assert relay.chat(key).status_code == 200
    ingest()
    assert relay.chat(key).status_code == 200  # pending in the stream
    settings = app.config["SWITCHBOARD"]
    made = cli("backup", "create", str(tmp_path / "b"), "--json", database_url=settings.database_url, redis_url=settings.redis_url,
               instance=tmp_path / "s", key=settings.encryption_key)
    assert made.returncode == 0 and json.loads(made.stdout)["database"] == "sqlite", made.stderr
    try:
        slot = RedisSlot()
    except Exception as error:  # noqa: BLE001
        unavailable("Redis", error)
    try:
        restored = cli("backup", "restore", str(tmp_path / "b"), "--json", database_url=f"sqlite:///{tmp_path / 'restored.db'}",
                       redis_url=slot.url, instance=tmp_path / "r", key=settings.encryption_key)
        report = json.loads(restored.stdout)
        assert restored.returncode == 0 and report["ingested"] == 1 and report["reconcile"]["findings"] == [], restored.stderr
    finally:
        slot.release()
