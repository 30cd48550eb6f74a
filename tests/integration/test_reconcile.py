"""Reconciliation finds every disagreement between ledger, SQL balances and live balances, and
repairs them from the ledger; the cron script reports it in its exit code."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import update

from controlplane.extensions import db
from controlplane.models import Account, ApiKey
from relay.quota import Quota, account_key
from relay.usage import UsageEvent
from tests import factories
from tests.gateway import ROOT
from workers import usage as usage_worker
from workers.reconcile import reconcile


def settled_not_ingested(redis_client, request_id: str):
    """A customer with $2 whose request was charged 300 µ$ live, its event waiting in the usage stream."""
    user = factories.funded_user("2")
    key, _ = factories.api_key(user)
    quota = Quota(redis_client)
    hold = quota.hold(request_id, user.account_id, key.id, 500, None, time.time() + 60)
    event = UsageEvent(request_id=request_id, started_at=time.time(), finished_at=time.time(), endpoint="/v1/chat/completions",
                       status=200, api_key_id=key.id, account_id=user.account_id, cost=300)
    quota.settle(hold, 300, event.encode())
    return user, quota


def test_agreeing_books_are_consistent_including_charges_not_yet_ingested(sql_app, redis_client):
    settled_not_ingested(redis_client, "req_pending")
    assert reconcile().consistent  # Redis is 300 below SQL, and 300 is waiting in the stream
    usage_worker.ingest()
    assert reconcile().consistent


def test_an_event_both_queued_and_dead_lettered_is_one_pending_charge(sql_app, redis_client):
    """With the money spread over buckets an event moves between a usage stream and the dead letters
    by adding before deleting: a crash in between leaves it in both (or twice in the dead letters).
    It is still one request the live balance paid once: reconcile counts it once, and finds the books
    consistent rather than "repairing" the live balance with a second debit."""
    from controlplane.dead_letters import DEAD_STREAM, entry_fields
    from relay.redis_keys import usage_stream
    from workers.reconcile import pending_charges

    user, quota = settled_not_ingested(redis_client, "req_twice")
    [(_, fields)] = redis_client.xrange(usage_stream(0))
    for _ in range(2):
        redis_client.xadd(DEAD_STREAM, entry_fields(fields, "crashed mid-move", 1, "0-1"))
    assert pending_charges(redis_client) == {user.account_id: 300}
    report = reconcile(fix=True)
    assert [f.what for f in report.findings] == ["dead_letters"]  # operators still have the letters to act on
    assert quota.account(user.account_id)[0] == 2_000_000 - 300


def test_a_drifted_sql_balance_is_found_and_fixed_from_the_ledger(sql_app):
    user = factories.funded_user("1")
    db.session.execute(update(Account).where(Account.id == user.account_id).values(balance=5))
    db.session.commit()
    report = reconcile()
    assert [(f.what, f.expected, f.found) for f in report.findings] == [("account_balance", 1_000_000, 5)]
    assert reconcile(fix=True).findings[0].fixed
    assert reconcile().consistent


def test_a_drifted_live_balance_and_key_spend_are_found_and_fixed(sql_app, redis_client):
    user = factories.funded_user("1")
    key, _ = factories.api_key(user)
    redis_client.hset(account_key(user.account_id), "bal", 999)
    db.session.execute(update(ApiKey).where(ApiKey.id == key.id).values(spent=42))
    db.session.commit()
    found = {f.what: f for f in reconcile(fix=True).findings}
    assert found["live_balance"].expected == 1_000_000 and found["live_balance"].found == 999 and found["live_balance"].fixed
    assert found["key_spent"].expected == 0 and found["key_spent"].fixed
    assert int(redis_client.hget(account_key(user.account_id), "bal")) == 1_000_000
    assert reconcile().consistent


def test_a_stuck_usage_backlog_and_holds_past_their_deadline_need_attention(sql_app, redis_client):
    user = factories.funded_user("2")
    key, _ = factories.api_key(user)
    quota = Quota(redis_client)
    quota.hold("req_orphan", user.account_id, key.id, 500, None, time.time() - 5)  # its relay died
    report = reconcile()
    assert (report.stale_holds, [f.what for f in report.findings]) == (1, ["stale_holds"])
    assert quota.release_expired(time.time()) == 1
    assert reconcile().consistent
    # An event ingestion has not written for two minutes: ingestion is stuck.
    event = UsageEvent(request_id="req_old", started_at=0, finished_at=0, endpoint="/v1/chat/completions", status=200)
    redis_client.xadd("sb:usage", {"e": event.encode()}, id=f"{int((time.time() - 120) * 1000)}-0")
    report = reconcile()
    assert report.backlog == 1 and report.backlog_age_s >= 119 and [f.what for f in report.findings] == ["usage_backlog"]
    usage_worker.ingest()
    assert reconcile().consistent


@pytest.fixture
def script_env(app, redis_slot, tmp_path):
    env = dict(os.environ, DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=redis_slot.url,
               SWITCHBOARD_INSTANCE=str(tmp_path), SWITCHBOARD_ENCRYPTION_KEY=app.config["SWITCHBOARD"].encryption_key)
    return env


def run_script(name: str, env, *args):
    return subprocess.run([sys.executable, "-m", f"scripts.{name.removesuffix('.py')}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_reconcile_script_exit_codes(app, script_env, redis_client):
    user = factories.funded_user("1")
    assert run_script("reconcile.py", script_env).returncode == 0
    db.session.execute(update(Account).where(Account.id == user.account_id).values(balance=7))
    db.session.commit()
    found = run_script("reconcile.py", script_env, "--fix")
    assert found.returncode == 3 and "account_balance" in found.stdout and "(fixed)" in found.stdout
    assert run_script("reconcile.py", script_env).returncode == 0
    redis_client.set("sb:cron:reconcile", "someone else")
    busy = run_script("reconcile.py", script_env)
    assert busy.returncode == 75 and "in progress" in busy.stderr


def test_sweep_script_releases_abandoned_holds(app, script_env, redis_client):
    quota = Quota(redis_client)
    quota.seed_account(1, 100)
    quota.hold("req_dead", 1, 1, 60, None, time.time() - 5)
    done = run_script("sweep_holds.py", script_env)
    assert done.returncode == 0 and "released 1" in done.stdout
    assert quota.account(1) == (100, 0)
