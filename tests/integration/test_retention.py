"""Request logs past their retention are pruned in bounded batches, on both SQL back ends, by the
scheduler's job and by the cron script; rollups and the ledger keep what the consoles need."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from rq.cron import CronScheduler
from sqlalchemy import func, select

from controlplane.extensions import db
from controlplane.models import LedgerEntry, RequestLog, UsageRollup
from controlplane.runtime import runtime
from relay.usage import UsageEvent
from tests import factories
from tests.gateway import ROOT
from workers import maintenance
from workers.schedule import register
from workers.usage import write_batch

DAY = 86_400


def requests(user, ages_in_days: list[float]) -> None:
    now = time.time()
    write_batch([UsageEvent(request_id=f"req_{i}", started_at=now - age * DAY, finished_at=now - age * DAY, endpoint="/v1/chat/completions",
                            status=200, account_id=user.account_id, user_id=user.id, model="gpt-4o-mini", input_tokens=3, cost=10)
                 for i, age in enumerate(ages_in_days)])
    db.session.commit()


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_old_request_logs_go_in_batches_and_the_books_stay(sql_app):
    user = factories.funded_user("1")
    requests(user, [120, 100, 95, 91, 89, 10, 0])
    rollups_before, charges_before = count(UsageRollup), count(LedgerEntry)
    assert maintenance.prune_request_logs(90, batch=2, max_batches=1) == 2  # bounded: one batch of two
    assert maintenance.prune_request_logs(90, batch=2) == 2
    assert sorted(db.session.scalars(select(RequestLog.request_id))) == ["req_4", "req_5", "req_6"]
    assert (count(UsageRollup), count(LedgerEntry)) == (rollups_before, charges_before)
    assert maintenance.prune_request_logs(90) == 0  # idempotent
    assert maintenance.prune_request_logs(0) == 0  # 0 keeps everything


def test_pruning_and_reconciling_are_scheduled(app):
    scheduler = CronScheduler(connection=runtime().redis)
    register(scheduler, probe_every=0)
    funcs = {job.func for job in scheduler.get_jobs()}
    assert {maintenance.scheduled_prune, maintenance.scheduled_reconcile} <= funcs
    factories.funded_user("1")
    assert maintenance.scheduled_reconcile() is True


def test_the_cron_script_prunes_and_refuses_bad_arguments(app, redis_slot, tmp_path):
    user = factories.funded_user("1")
    requests(user, [40, 1])
    settings = app.config["SWITCHBOARD"]
    env = dict(os.environ, DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url, SWITCHBOARD_INSTANCE=str(settings.instance_dir),
               SWITCHBOARD_ENCRYPTION_KEY=settings.encryption_key, SWITCHBOARD_SECRET_KEY="x")
    bad = subprocess.run([sys.executable, "-m", "scripts.prune_logs", "--days", "0"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    done = subprocess.run([sys.executable, "-m", "scripts.prune_logs", "--days", "30"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "deleted 1 request log(s)" in done.stdout, done.stderr
    db.session.expire_all()
    assert list(db.session.scalars(select(RequestLog.request_id))) == ["req_1"]
