"""Starting Switchboard's processes: relay, web, worker, scheduler, ingest, and `up` (all in one, its
worker, scheduler and usage consumer supervised: restarted when they die, gone when `up` is — see
supervision.py)."""
from __future__ import annotations

import logging
import os
import secrets
import signal

import click
from flask import current_app
from flask.cli import with_appcontext

from controlplane.cli.supervision import Supervisor


def _logging() -> None:
    from relay import logs

    logs.configure()


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run the queued jobs, then exit.")
@click.option("--queue", "queue_names", multiple=True, help="Only these queues (repeatable); default all.")
@with_appcontext
def worker_command(burst, queue_names):
    """Run an RQ worker on Switchboard's queues."""
    _logging()
    from rq import Queue, SimpleWorker

    from controlplane.runtime import runtime
    from workers import queues

    logging.getLogger("rq").setLevel(logging.WARNING)
    redis = runtime().queue_redis
    # SimpleWorker runs jobs in this process, inside this app context: no fork and app per job.
    names = queue_names or (*queues.ALL, queues.PROBE)
    worker = SimpleWorker([Queue(name, connection=redis) for name in names], connection=redis)
    worker.work(burst=burst, logging_level=os.environ.get("SWITCHBOARD_LOG_LEVEL", "WARNING"))


@click.command("scheduler")
@with_appcontext
def scheduler_command():
    """Run RQ's cron scheduler with Switchboard's periodic jobs."""
    _logging()
    from rq.cron import CronScheduler
    from rq.exceptions import StopRequested

    from controlplane.runtime import runtime
    from workers.schedule import register

    logging.getLogger("rq").setLevel(logging.WARNING)
    scheduler = CronScheduler(connection=runtime().queue_redis, logging_level="WARNING")
    register(scheduler)
    try:
        scheduler.start()
    except StopRequested:  # a second stop signal while shutting down
        pass


@click.command("ingest")
@click.option("--drain", is_flag=True, help="Ingest what is waiting, then exit (e.g. from cron, instead of a resident consumer).")
@with_appcontext
def ingest_command(drain):
    """Ingest usage: the Redis usage stream into SQL as requests finish, until SIGTERM."""
    _logging()
    import gc

    from controlplane.runtime import runtime
    from relay.processes import GC_THRESHOLDS
    from workers.consumer import Consumer

    settings = runtime().settings
    consumer = Consumer(runtime().redis, settings.usage_batch_size, settings.usage_linger_ms / 1000)
    signal.signal(signal.SIGTERM, consumer.stop)
    signal.signal(signal.SIGINT, consumer.stop)
    # The app, its models and compiled statements live as long as the process: out of the
    # collector's full passes. A batch allocates thousands of short-lived objects; collecting young
    # objects every 20,000 allocations rather than 700 spares re-walking each batch many times over.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    totals = consumer.drain(max_seconds=3600) if drain else consumer.run()
    if drain:
        click.echo(f"{totals.written} usage events written, {totals.dead_lettered} dead-lettered")


def _first_operator() -> tuple[str, str] | None:
    from controlplane.models import Role
    from controlplane.services import users
    from controlplane.services.base import Actor

    if users.operators_exist():
        return None
    email = os.environ.get("SWITCHBOARD_ADMIN_EMAIL", "admin@switchboard.local")
    password = secrets.token_urlsafe(12)
    users.create_operator(Actor.system("setup"), email, password, Role.ADMIN)
    return email, password


def _child_env() -> dict[str, str]:
    """The children's environment. With the embedded Redis they register as its users themselves
    (no REDIS_URL handed down), so it keeps running for as long as any of them does."""
    from controlplane.cli import group

    env = os.environ.copy()
    if group.embedded() is not None:
        env.pop("REDIS_URL", None)
    return env


EMBEDDED_REDIS_CHECK_SECONDS = 2.0


def _keep_embedded_redis(embedded, supervisor: Supervisor) -> None:
    """`up`'s embedded Redis is one of the things it runs: started again when it stops answering
    (killed, crashed), from its append-only file, until `up` stops."""
    import gevent

    log = logging.getLogger("controlplane.up")
    while not supervisor.stopping:
        gevent.sleep(EMBEDDED_REDIS_CHECK_SECONDS)
        if supervisor.stopping:
            return
        try:
            if embedded.ensure_running():
                log.warning("the embedded Redis had stopped answering; started it again from its append-only file")
        except Exception:  # the watch must outlive any one failed start
            log.exception("starting the embedded Redis again failed; trying again")


@click.command("up")
@with_appcontext
def up_command():
    """Everything on one port: /v1/* by the relay, the rest by the control plane; worker, scheduler
    and usage consumer as child processes. Ctrl-C stops all of it."""
    _logging()
    import gevent
    from flask_migrate import upgrade

    from controlplane.snapshot import publish
    from relay.server import build_relay, make_server, start_follower

    app = current_app._get_current_object()
    settings = app.config["SWITCHBOARD"]
    upgrade()
    from workers.maintenance import ensure_log_partitions

    ensure_log_partitions()  # PostgreSQL: this month's and the next request-log partitions exist before traffic
    created = _first_operator()
    publish()
    from controlplane import key_rebuild
    from controlplane.runtime import runtime

    key_rebuild.ensure(runtime().redis)  # a fresh or lost Redis gets every key record and balance first

    from workers import queues

    relay_app = build_relay(settings.relay_settings())
    app.config["EMBEDDED_RELAY_APP"] = relay_app  # /metrics and /readyz carry the relay's too
    background = start_follower(relay_app)

    def dispatch(environ, start_response):
        if environ.get("PATH_INFO", "").startswith(("/v1/", "/v1beta/")):  # the OpenAI/Anthropic and Gemini APIs
            return relay_app(environ, start_response)
        return app(environ, start_response)

    server = make_server((settings.host, settings.port), dispatch, settings.relay_settings())
    relay_app.attach(server)
    server.init_socket()  # bind now so a busy port fails before we announce anything

    # Channel probes get a worker of their own: a slow probe run never delays health reports or upkeep.
    supervisor = Supervisor({
        "worker": ["worker", *(arg for name in queues.ALL for arg in ("--queue", name))],
        "probe worker": ["worker", "--queue", queues.PROBE],
        "scheduler": ["scheduler"],
        "ingest": ["ingest"],
    }, _child_env())
    supervisor.start()
    gevent.spawn(supervisor.watch)
    from controlplane.cli import group

    if group.embedded() is not None:
        gevent.spawn(_keep_embedded_redis, group.embedded(), supervisor)

    stopping = []

    def stop(*_):
        if stopping:  # a second Ctrl-C: stop now, without waiting for requests in flight
            server.stop()
            return
        stopping.append(True)
        supervisor.stopping = True  # children a group-wide signal stopped are not restarted
        click.echo("\nstopping… (requests in flight may take up to %g s)" % relay_app.settings.drain_seconds)
        gevent.spawn(server.drain, relay_app.settings.drain_seconds)

    # Referenced until exit, then cancelled, as gevent asks of its signal handlers.
    handlers = [gevent.signal_handler(signal.SIGINT, stop), gevent.signal_handler(signal.SIGTERM, stop)]

    url = f"http://{settings.host}:{settings.port}"
    click.echo(f"Switchboard is running at {url}")
    click.echo(f"  OpenAI-compatible API: {url}/v1")
    click.echo(f"  Operator console:      {url}/admin")
    if created:
        click.echo(f"  First operator (shown once): {created[0]} / {created[1]}")
    try:
        server.serve_forever()
    finally:
        # The follower first: it must not watch the embedded Redis go away at exit and report it lost.
        background.stop()
        supervisor.stop()
        for handler in handlers:
            handler.cancel()
