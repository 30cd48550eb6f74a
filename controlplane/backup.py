"""Backups of what cannot be rebuilt, and restoring them into an empty database and Redis.

SQL is the truth: the ledger, balances, keys, request logs. Of Redis only two things are not in SQL:
the usage streams (requests settled but not yet ingested — their charges; one stream per money
bucket, relay/redis_keys.py) and the dead letters. The
rest — live balances, key records, spend windows, the routing snapshot — is rebuilt from SQL
(controlplane/key_rebuild.py), and holds, limits, health and idempotency records are short-lived.

Order makes them consistent without stopping anything: the streams are read first, atomically (one
MULTI: an event moves from one to the other in one transaction too), then the database is dumped.
An event ingested between the two is in both, and ingestion skips it on restore (it is idempotent
on the request id); reading the database first would lose such events. With the money spread over
a Redis Cluster's buckets no transaction spans the streams' slots (`_read_across_slots`).

A backup is a folder: `database.dump` (pg_dump's custom format) or `database.sqlite`,
`redis-streams.jsonl` (one stream entry a line, bytes base64-encoded, ids kept) and `manifest.json`
(what, when, schema revision, SHA-256 of each file). Secrets are not in it: keep
SWITCHBOARD_ENCRYPTION_KEY apart, or the restored upstream credentials cannot be read.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess  # nosec B404 - pg_dump/pg_restore run with argument lists
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from controlplane.dead_letters import DEAD_STREAM
from relay import redis_keys
from relay.usage import USAGE_STREAMS

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
STREAMS_FILE = "redis-streams.jsonl"
PG_FILE = "database.dump"
SQLITE_FILE = "database.sqlite"
STREAMS = (*USAGE_STREAMS, DEAD_STREAM)
DRAIN_SECONDS = 3_600  # ingesting the restored backlog: at most this long, then restore reports what is left


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why."""


@dataclass
class RestoreReport:
    streams: dict[str, int] = field(default_factory=dict)  # entries put back per stream
    ingested: int = 0  # usage events written to SQL from the restored stream
    dead_lettered: int = 0
    reconcile: dict = field(default_factory=dict)  # workers.reconcile's report after the restore

    @property
    def consistent(self) -> bool:
        return bool(self.reconcile.get("consistent"))


def libpq_target(database_url: str) -> tuple[str, dict[str, str]]:
    """The SQLAlchemy URL as pg_dump and pg_restore take it (no driver name), and the environment
    that carries its password: a command line is readable by every user of the machine (ps)."""
    url = make_url(database_url)
    secret = {"PGPASSWORD": url.password} if url.password else {}
    bare = URL.create("postgresql", username=url.username, host=url.host, port=url.port, database=url.database, query=url.query)
    return bare.render_as_string(hide_password=False), secret


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _b64(value: bytes | str) -> str:
    return base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()


def _run(argv: list[str], env: dict[str, str]) -> None:
    tool = shutil.which(argv[0])
    if tool is None:
        raise BackupError(f"{argv[0]} is not installed (the PostgreSQL client tools, of the server's major version or newer)")
    done = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, check=False, env={**os.environ, **env})  # nosec B603 - fixed programs; arguments from the operator's command line; no shell
    if done.returncode != 0:
        raise BackupError(f"{argv[0]} failed: {done.stderr.strip()[-2000:]}")


# --- backing up ----------------------------------------------------------------------------------

def _read_streams(redis) -> dict[str, list]:
    if redis_keys.SPREAD:
        return _read_across_slots(redis)
    pipe = redis.pipeline(transaction=True)
    for name in STREAMS:
        pipe.xrange(name)
    return dict(zip(STREAMS, pipe.execute(), strict=True))


def _read_across_slots(redis) -> dict[str, list]:
    """With the money spread over buckets (Redis Cluster): an event moving between a usage stream and the dead letters is added to
    one before it is deleted from the other, so the usage streams are read before and after the dead
    letters and one of the three reads has it. An event found in both is kept in its usage stream
    only: restored, it is written or dead-lettered again, where a dead letter kept too would have its
    charge taken off the live balance twice."""
    before = {name: redis.xrange(name) for name in USAGE_STREAMS}
    dead = redis.xrange(DEAD_STREAM)
    read: dict[str, list] = {}
    for name in USAGE_STREAMS:
        # A stream's ids only grow: what was added since the first read follows its last id, and the
        # two reads together stay in id order (restored under their ids).
        last = before[name][-1][0] if before[name] else None
        since = redis.xrange(name, min="(" + (last.decode() if isinstance(last, bytes) else last)) if last is not None else redis.xrange(name)
        read[name] = [*before[name], *since]
    queued = {fields[b"e"] for entries in read.values() for _, fields in entries if b"e" in fields}
    read[DEAD_STREAM] = [entry for entry in dead if entry[1].get(b"e") not in queued]
    return read


def dump_streams(redis, path: Path) -> dict[str, int]:
    """The streams read at once (see the module's docstring), written one entry a line."""
    counts = {}
    with path.open("w") as out:
        for name, entries in _read_streams(redis).items():
            counts[name] = len(entries)
            for entry_id, fields in entries:
                out.write(json.dumps({"stream": name, "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                                      "fields": {_b64(k): _b64(v) for k, v in fields.items()}}) + "\n")
    return counts


def _schema_revision(session) -> str | None:
    try:
        return session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        session.rollback()


def create(database_url: str, redis, session, folder: Path) -> dict:
    """Write a backup into `folder` (new or empty); returns the manifest."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty")
    streams = dump_streams(redis, folder / STREAMS_FILE)  # first: see the module's docstring
    backend = make_url(database_url).get_backend_name()
    if backend == "postgresql":
        database_file = PG_FILE
        target, secret = libpq_target(database_url)
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file", str(folder / PG_FILE), target], secret)
    elif backend == "sqlite":
        database_file = SQLITE_FILE
        source = sqlite3.connect(make_url(database_url).database or "")
        target = sqlite3.connect(folder / SQLITE_FILE)
        try:
            source.backup(target)  # SQLite's online backup: a consistent copy while others write
        finally:
            target.close()
            source.close()
    else:
        raise BackupError(f"cannot back up a {backend} database")
    manifest = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "database": backend,
                "schema_revision": _schema_revision(session), "streams": streams,
                "files": {name: _sha256(folder / name) for name in (database_file, STREAMS_FILE)}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# --- restoring -----------------------------------------------------------------------------------

def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise BackupError(f"{folder} holds no readable {MANIFEST}: {error}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}")
    for name, digest in manifest["files"].items():
        if not (folder / name).is_file() or _sha256(folder / name) != digest:
            raise BackupError(f"{name} is missing or does not match its checksum")
    return manifest


def check_empty(database_url: str, engine, redis) -> None:
    """Restore only into an empty database and an empty Redis database: never over live data."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            tables = connection.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")).scalar()
        else:
            tables = connection.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'table'")).scalar()
    if tables:
        raise BackupError(f"the database at {make_url(database_url).render_as_string()} is not empty ({tables} tables): "
                          "restore into a new one")
    if redis.dbsize():
        raise BackupError("the Redis database is not empty: restore into a new one (another index, or FLUSHDB it first)")


def check_layout(manifest: dict) -> None:
    """A backup's streams must be named as this deployment names them: one taken under another
    Redis layout (one server or Cluster, another number of money buckets) is restored under its own,
    and the layout changed afterwards (docs/redis.md, migration)."""
    foreign = sorted(name for name, count in manifest["streams"].items() if count and name not in STREAMS)
    if foreign:
        raise BackupError(f"the backup holds events in {', '.join(foreign)}, which this deployment's Redis layout does not name "
                          "(REDIS_URL redis-cluster:// or not, SWITCHBOARD_REDIS_MONEY_BUCKETS): restore it under the layout "
                          "it was taken with")


def restore_database(database_url: str, folder: Path, manifest: dict, engine) -> None:
    backend = make_url(database_url).get_backend_name()
    if backend != manifest["database"]:
        raise BackupError(f"the backup is of a {manifest['database']} database, the target is {backend}")
    if backend == "postgresql":
        target, secret = libpq_target(database_url)
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", "--dbname", target,
              str(folder / PG_FILE)], secret)
    else:
        engine.dispose()
        shutil.copyfile(folder / SQLITE_FILE, make_url(database_url).database or "")


def restore_streams(redis, path: Path) -> dict[str, int]:
    """Put the entries back under their own ids; the usage streams' consumer groups start from the
    beginning, so every restored event is ingested (or found written already) once."""
    from workers.usage import ensure_group

    counts: dict[str, int] = {name: 0 for name in STREAMS}
    pipe = redis.pipeline(transaction=False)
    with path.open() as lines:
        for line in lines:
            entry = json.loads(line)
            if entry["stream"] not in counts:
                continue
            fields = {base64.b64decode(k): base64.b64decode(v) for k, v in entry["fields"].items()}
            pipe.xadd(entry["stream"], fields, id=entry["id"])
            counts[entry["stream"]] += 1
            if len(pipe) >= 1_000:
                pipe.execute()
    pipe.execute()
    ensure_group(redis)
    return counts


def restore(database_url: str, redis, folder: Path) -> RestoreReport:
    """Restore `folder` into the empty database and Redis this app points at, then bring Redis up
    to SQL: ingest the restored usage backlog, rebuild live balances and key records, take the
    dead letters' charges off the live balances, publish the routing snapshot, and reconcile.
    Needs an app context (the target's)."""
    from flask_migrate import upgrade

    from controlplane import key_rebuild, ledger
    from controlplane import snapshot as snapshots
    from controlplane.dead_letters import newest
    from controlplane.extensions import db
    from controlplane.runtime import runtime
    from workers.consumer import Consumer
    from workers.maintenance import ensure_log_partitions
    from workers.reconcile import reconcile

    manifest = read_manifest(folder)
    check_layout(manifest)
    check_empty(database_url, db.engine, redis)
    restore_database(database_url, folder, manifest, db.engine)
    upgrade()  # a backup from an older release gets this release's schema
    ensure_log_partitions()
    report = RestoreReport(streams=restore_streams(redis, folder / STREAMS_FILE))
    totals = Consumer(redis, runtime().settings.usage_batch_size).drain(max_seconds=DRAIN_SECONDS)
    report.ingested, report.dead_lettered = totals.written, totals.dead_lettered
    # Live balances are SQL's once the backlog is in SQL; then the dead letters' charges come off them
    # again, as they had before the loss (reconcile counts them as pending until an operator acts).
    key_rebuild.rebuild(redis)
    quota = runtime().quota
    before: str | None = None
    taken: set[str] = set()  # a request dead-lettered twice (a crash mid-move, spread over buckets) is taken once
    while True:
        letters, before = newest(redis, before, limit=500)
        for letter in letters:
            event, charge = letter.event, letter.live_charge
            if event is None or not charge or event.account_id is None or event.request_id in taken:
                continue
            taken.add(event.request_id)
            quota.credit(event.account_id, -charge, ledger.stored_balance(event.account_id) - charge)
            if event.api_key_id is not None:
                quota.add_key_spent(event.account_id, event.api_key_id, charge)
        if before is None:
            break
    db.session.rollback()
    snapshots.publish()
    report.reconcile = reconcile().as_dict()
    return report
