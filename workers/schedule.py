"""What the scheduler runs, and how often (RQ's cron scheduler)."""
from __future__ import annotations

from workers import alerts, maintenance, queues, usage

INGEST_EVERY = 1  # seconds: a finished request's charge shows in SQL within a few seconds
SWEEP_EVERY = 60
REPUBLISH_EVERY = 300
ALERTS_EVERY = 60  # low-balance alerts (issue 6): a crossing is noticed within a minute


def register(scheduler) -> None:
    scheduler.register(usage.ingest, queues.USAGE, interval=INGEST_EVERY, job_timeout=queues.INGEST_TIMEOUT, result_ttl=0, ttl=30)
    scheduler.register(maintenance.sweep_holds, queues.DEFAULT, interval=SWEEP_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(maintenance.republish_snapshot, queues.DEFAULT, interval=REPUBLISH_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(alerts.check_low_balances, queues.DEFAULT, interval=ALERTS_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
