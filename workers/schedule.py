"""What the scheduler runs, and how often (RQ's cron scheduler). Usage ingestion is not a job: it is
its own process, `switchboard ingest` (workers/consumer.py)."""
from __future__ import annotations

from workers import alerts, budget_alerts, health, maintenance, notices, queues

SWEEP_EVERY = 60
REPUBLISH_EVERY = 300
KEY_RECORDS_EVERY = 30  # after a Redis loss, the rebuild starts within this
KEY_SWEEP_EVERY = 60  # 10 batches of 1,000 keys a minute: a million keys compared in under two hours
ALERTS_EVERY = 60  # low-balance alerts: a crossing is noticed within a minute
REPORTS_EVERY = 2  # a key a relay found dead is disabled in SQL within seconds
PRUNE_EVERY = 3_600  # request logs past retention (whole months on PostgreSQL), after creating the months ahead
RECONCILE_EVERY = 900
NOTICES_EVERY = 900  # price and terms notices: days of notice, so a quarter of an hour is prompt


def register(scheduler, probe_every: int | None = None) -> None:
    """`probe_every` defaults to the settings' SWITCHBOARD_PROBE_EVERY_SECONDS (needs an app context)."""
    if probe_every is None:
        from controlplane.runtime import runtime

        probe_every = runtime().settings.probe.every_seconds
    scheduler.register(maintenance.sweep_holds, queues.DEFAULT, interval=SWEEP_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(maintenance.republish_snapshot, queues.DEFAULT, interval=REPUBLISH_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(maintenance.ensure_key_records, queues.DEFAULT, interval=KEY_RECORDS_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT,
                       result_ttl=0)
    scheduler.register(maintenance.sweep_key_records, queues.DEFAULT, interval=KEY_SWEEP_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT,
                       result_ttl=0)
    scheduler.register(alerts.check_low_balances, queues.DEFAULT, interval=ALERTS_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(budget_alerts.check_budgets, queues.DEFAULT, interval=ALERTS_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(notices.send_notices, queues.DEFAULT, interval=NOTICES_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(alerts.notify_dead_letters, queues.DEFAULT, interval=ALERTS_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(maintenance.scheduled_prune, queues.DEFAULT, interval=PRUNE_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT, result_ttl=0)
    scheduler.register(maintenance.scheduled_reconcile, queues.DEFAULT, interval=RECONCILE_EVERY, job_timeout=queues.MAINTENANCE_TIMEOUT,
                       result_ttl=0)
    scheduler.register(health.apply_reports, queues.HEALTH, interval=REPORTS_EVERY, job_timeout=queues.HEALTH_TIMEOUT, result_ttl=0, ttl=30)
    if probe_every > 0:
        scheduler.register(health.scheduled_probe, queues.PROBE, interval=probe_every, job_timeout=queues.PROBE_TIMEOUT,
                           result_ttl=3600, ttl=probe_every)
