"""`switchboard up` needs no crontab: the RQ cron scheduler enqueues the health jobs, and a worker on
the probe queue runs them (here in-process, as rq's own tests do)."""
from __future__ import annotations

from dataclasses import replace

from rq import Queue, SimpleWorker
from rq.cron import CronScheduler

from controlplane.extensions import db
from controlplane.models import Channel
from controlplane.runtime import runtime
from controlplane.settings import ProbeSettings
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from workers import health, queues
from workers.schedule import register


def test_the_scheduler_enqueues_probes_and_report_handling_and_a_worker_runs_them(app):
    fake = FakeOpenAI()
    try:
        rt = runtime()
        rt.settings = replace(rt.settings, probe=ProbeSettings(disable_after=1, timeout_seconds=2.0, every_seconds=120))
        ch = factories.channel(fake.url)
        fake.default = Behaviour(status=500)
        scheduler = CronScheduler(connection=rt.redis)
        register(scheduler)
        jobs = {job.func: job for job in scheduler.get_jobs()}
        assert jobs[health.scheduled_probe].interval == 120 and jobs[health.scheduled_probe].queue_name == queues.PROBE
        assert jobs[health.apply_reports].queue_name == queues.HEALTH
        scheduler.enqueue_jobs()  # interval jobs run at once on a fresh start
        SimpleWorker([Queue(queues.PROBE, connection=rt.redis)], connection=rt.redis).work(burst=True)
        db.session.expire_all()
        assert db.session.get(Channel, ch.id).status == "auto_disabled"
        assert len(fake.chat_requests()) == 1
    finally:
        runtime().settings = app.config["SWITCHBOARD"]
        fake.close()


def test_a_probe_interval_of_zero_turns_scheduled_probes_off(app):
    scheduler = CronScheduler(connection=runtime().redis)
    register(scheduler, probe_every=0)
    assert health.scheduled_probe not in {job.func for job in scheduler.get_jobs()}
