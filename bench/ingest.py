"""`make bench-ingest`: what usage ingestion costs per event, on SQLite and on PostgreSQL.

    .venv/bin/python -m bench.ingest [--events 10000] [--backends sqlite,postgres] [--rate 2000 --seconds 5]
                                     [--inline] [--profile]

For each back end: a fresh database and an embedded Redis, the demo's channels, prices and customers,
then two measurements of the real `switchboard ingest` process:

- drain: N realistic usage events (the demo's traffic mix, as the relay writes them) are put on the
  stream while the consumer is stopped (SIGSTOP); it is let go and timed until the stream is empty. CPU
  per event of the consumer (from /proc), of Redis (INFO cpu) and of the PostgreSQL backend serving it.
- steady: events arrive at `--rate` per second for `--seconds`; the largest backlog seen and how long
  the stream took to empty after the last event.

`--inline` measures `workers.usage.ingest()` in this process instead (no consumer process; Redis and
PostgreSQL CPU as above); `--profile` adds a cProfile of that inline drain. Not a test: it measures.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from bench.measure import cpu_seconds
from controlplane.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
POSTGRES_ADMIN = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CUT_SHARE = 0.03  # events whose settle could charge only part of the cost (a `charged` field), as under real load


@dataclass
class Database:
    name: str
    url: str  # SQLAlchemy URL
    admin_url: str | None = None  # PostgreSQL: where the throwaway database was created
    dbname: str | None = None

    def drop(self) -> None:
        if self.admin_url is None:
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


def sqlite_database(folder: Path) -> Database:
    return Database("sqlite", f"sqlite:///{folder / 'bench.db'}")


def postgres_database(admin_url: str) -> Database:
    import psycopg

    name = "sbbench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    url = urlunsplit(parts._replace(path="/" + name))
    return Database("postgres", "postgresql+psycopg://" + url.split("://", 1)[1], admin_url, name)


@dataclass
class Sample:
    """CPU seconds spent so far by the parts ingestion uses."""

    consumer: float
    redis: float
    postgres: float
    at: float = field(default_factory=time.perf_counter)


class Stand:
    """One back end under test: database, embedded Redis, seeded control plane, the usage stream."""

    def __init__(self, database: Database, folder: Path, batch: int | None):
        from controlplane.app import create_app
        from controlplane.settings import Settings

        self.database, self.folder = database, folder
        self.redis_home = EmbeddedRedis(folder)
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update(SWITCHBOARD_INSTANCE=str(folder), DATABASE_URL=database.url, SWITCHBOARD_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        if batch:
            self.env["SWITCHBOARD_USAGE_BATCH"] = str(batch)
        self.env["REDIS_URL"] = self.redis_home.acquire()
        self.app = create_app(Settings.from_env(self.env))
        self.consumer: subprocess.Popen | None = None
        with self.app.app_context():
            from flask_migrate import upgrade

            from controlplane.cli.demo import stage
            from controlplane.runtime import runtime

            upgrade()
            self.rng = random.Random(12)
            self.staged, _ = stage(self.rng)
            self.redis = runtime().redis
            self.redis_pid = int(self.redis.info("server")["process_id"])

    # --- the stream --------------------------------------------------------------------------------
    def events(self, count: int) -> list[dict]:
        from controlplane.cli.demo_traffic import recent

        out = []
        for event in recent(self.rng, time.time(), count, self.staged.customers, self.staged.routes, self.staged.prices):
            fields = {"e": event.encode()}
            if event.cost and self.rng.random() < CUT_SHARE:
                fields["charged"] = event.cost // 2
            out.append(fields)
        return out

    def put(self, entries: list[dict]) -> None:
        from relay.usage import USAGE_STREAMS

        pipe = self.redis.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(USAGE_STREAMS[0], fields)  # the bench's Redis is one server: one stream
        pipe.execute()

    def backlog(self) -> int:
        from relay.usage import USAGE_STREAMS

        return sum(int(self.redis.xlen(stream)) for stream in USAGE_STREAMS)

    def written(self) -> dict:
        """What is in SQL, and whether the rollups and the ledger agree with the request logs."""
        from sqlalchemy import func, select

        from controlplane.extensions import db
        from controlplane.models import ChannelRollup, LedgerEntry, RequestLog
        from controlplane.models.rollups import UsageRollup

        with self.app.app_context():
            logs, cost = db.session.execute(select(func.count(), func.coalesce(func.sum(RequestLog.cost), 0))).one()
            totals = {"request_logs": int(logs), "cost": int(cost)}  # PostgreSQL sums bigints as numeric
            for name, model in (("usage_rollups", UsageRollup), ("channel_rollups", ChannelRollup)):
                requests, rolled = db.session.execute(select(func.sum(model.requests), func.sum(model.cost))).one()
                totals[name] = requests == logs and rolled == cost
            charged = db.session.scalar(select(func.coalesce(-func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.kind == "charge"))
            totals["ledger"] = charged == cost
            return totals

    # --- CPU ---------------------------------------------------------------------------------------
    def redis_cpu(self) -> float:
        info = self.redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def postgres_cpu(self) -> float:
        """CPU of the PostgreSQL backends connected to this database, other than the bench's own."""
        if self.database.admin_url is None:
            return 0.0
        import psycopg

        # A connection of its own, so that the backend serving an inline drain is counted too.
        with psycopg.connect(urlsplit(self.database.admin_url)._replace(path="/" + self.database.dbname).geturl(), autocommit=True) as conn:
            pids = [row[0] for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        total = 0.0
        for pid in pids:
            try:
                total += cpu_seconds(pid)
            except (FileNotFoundError, PermissionError):  # a server on another machine: not measured
                pass
        return total

    def sample(self, consumer_cpu: float) -> Sample:
        return Sample(consumer_cpu, self.redis_cpu(), self.postgres_cpu())

    # --- the consumer process ----------------------------------------------------------------------
    def start_consumer(self) -> None:
        from relay.usage import USAGE_GROUP, USAGE_STREAMS

        with open(self.folder / "ingest.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.consumer = subprocess.Popen([PY, "-m", "controlplane", "ingest"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

        deadline = time.time() + 60
        while time.time() < deadline:
            if self.consumer.poll() is not None:
                raise RuntimeError("switchboard ingest exited:\n" + (self.folder / "ingest.log").read_text()[-2000:])
            try:
                reading = bool(self.redis.xinfo_consumers(USAGE_STREAMS[0], USAGE_GROUP))
            except redis.ResponseError:  # no group yet
                reading = False
            if reading:
                time.sleep(0.3)  # its first blocking read is sent
                return
            time.sleep(0.1)
        raise RuntimeError("switchboard ingest did not start reading")

    def stop(self) -> None:
        if self.consumer is not None and self.consumer.poll() is None:
            self.consumer.send_signal(signal.SIGCONT)
            self.consumer.terminate()
            try:
                self.consumer.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.consumer.kill()
        self.redis_home.release()
        self.database.drop()


def per_event(before: Sample, after: Sample, count: int) -> dict:
    us = 1e6 / max(count, 1)
    return {"events": count, "seconds": round(after.at - before.at, 3), "consumer_us": round((after.consumer - before.consumer) * us, 1),
            "redis_us": round((after.redis - before.redis) * us, 1), "postgres_us": round((after.postgres - before.postgres) * us, 1)}


def wait_empty(stand: Stand, limit: float = 300) -> None:
    deadline = time.time() + limit
    while stand.backlog() and time.time() < deadline:
        time.sleep(0.01)
    if stand.backlog():
        raise RuntimeError(f"{stand.backlog()} events still waiting after {limit} s")


def drain_process(stand: Stand, count: int) -> dict:
    stand.start_consumer()
    pid = stand.consumer.pid
    entries = stand.events(count)
    stand.consumer.send_signal(signal.SIGSTOP)
    stand.put(entries)
    before = stand.sample(cpu_seconds(pid))
    stand.consumer.send_signal(signal.SIGCONT)
    wait_empty(stand)
    return per_event(before, stand.sample(cpu_seconds(pid)), count)


def drain_inline(stand: Stand, count: int, profile: bool) -> tuple[dict, str | None]:
    from workers import usage

    stand.put(stand.events(count))
    profiler = cProfile.Profile() if profile else None
    with stand.app.app_context():
        usage.ensure_group(stand.redis)
        before = stand.sample(time.process_time())
        if profiler:
            profiler.enable()
        while stand.backlog():
            usage.ingest(max_seconds=60)
        if profiler:
            profiler.disable()
        after = stand.sample(time.process_time())
    report = None
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("BENCH_PROFILE_SORT", "tottime")).print_stats(40)
        report = out.getvalue()
    return per_event(before, after, count), report


def steady(stand: Stand, rate: int, seconds: float) -> dict:
    """Events arrive at `rate` a second in small bursts; the backlog is watched while they do."""
    tick = 0.02
    entries = stand.events(int(rate * seconds))
    pid = stand.consumer.pid
    before = stand.sample(cpu_seconds(pid))
    started, worst, sent = time.perf_counter(), 0, 0
    while sent < len(entries):
        due = int((time.perf_counter() - started) * rate)
        if due > sent:
            stand.put(entries[sent:due])
            sent = min(due, len(entries))
        worst = max(worst, stand.backlog())
        time.sleep(tick / 2)
    fed = time.perf_counter()
    wait_empty(stand)
    emptied = time.perf_counter()
    out = per_event(before, stand.sample(cpu_seconds(pid)), len(entries))
    out.update(rate=rate, fed_seconds=round(fed - started, 2), max_backlog=worst, max_backlog_seconds=round(worst / rate, 3),
               empty_after_last_s=round(emptied - fed, 3))
    return out


def run_backend(database: Database, folder: Path, args) -> dict:
    stand = Stand(database, folder, args.batch)
    try:
        result: dict = {"backend": database.name}
        if args.inline:
            result["drain"], result["profile"] = drain_inline(stand, args.events, args.profile)
        else:
            result["drain"] = drain_process(stand, args.events)
            if args.rate:
                result["steady"] = steady(stand, args.rate, args.seconds)
        result["written"] = stand.written()
        return result
    finally:
        stand.stop()


def table(results: list[dict]) -> str:
    lines = ["| back end | events | drained in s | ingestion CPU µs/event | Redis µs/event | PostgreSQL µs/event "
             "| at rate: max backlog (s) | empty after last event s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, s = r["drain"], r.get("steady")
        at_rate = f"{s['max_backlog']} ({s['max_backlog_seconds']}) at {s['rate']}/s" if s else "—"
        after = s["empty_after_last_s"] if s else "—"
        lines.append(f"| {r['backend']} | {d['events']} | {d['seconds']} | {d['consumer_us']} | {d['redis_us']} | "
                     f"{d['postgres_us'] if r['backend'] == 'postgres' else '—'} | {at_rate} | {after} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN, help="where to create the throwaway database")
    parser.add_argument("--rate", type=int, default=2_000, help="events per second in the steady run (0 to skip)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=None, help="SWITCHBOARD_USAGE_BATCH for the consumer")
    parser.add_argument("--inline", action="store_true", help="measure workers.usage.ingest() in this process")
    parser.add_argument("--profile", action="store_true", help="with --inline: print a cProfile of the drain")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    os.environ["SWITCHBOARD_LOG_LEVEL"] = "WARNING"
    results = []
    for name in args.backends.split(","):
        folder = Path(tempfile.mkdtemp(prefix=f"switchboard-ingest-{name}-"))
        try:
            database = sqlite_database(folder) if name == "sqlite" else postgres_database(args.postgres_url)
            results.append(run_backend(database, folder, args))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    for r in results:
        if r.get("profile"):
            print(f"--- {r['backend']}: cProfile of the inline drain\n{r.pop('profile')}")
        r.pop("profile", None)
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "inline": args.inline, "results": results}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"ingest-{report['when'].replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(table(results))
    for r in results:
        w = r["written"]
        agree = all(w[k] for k in ("usage_rollups", "channel_rollups", "ledger"))
        print(f"{r['backend']}: {w['request_logs']} request logs; rollups and ledger {'agree with them' if agree else 'DISAGREE: ' + str(w)}")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
