"""`switchboard backup create|restore`: the database and the Redis streams SQL does not hold
(controlplane/backup.py; the procedure is docs/backup.md)."""
from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import with_appcontext

from controlplane.cli.group import emit, json_option


@click.group("backup")
def backup():
    """Back up PostgreSQL (or SQLite) and the Redis usage streams; restore into empty ones."""


@backup.command("create")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@json_option
@with_appcontext
def create_command(folder: Path, as_json: bool):
    """Write a backup into FOLDER (new or empty): the Redis streams first, then the database."""
    from controlplane import backup as backups
    from controlplane.extensions import db
    from controlplane.runtime import runtime

    rt = runtime()
    try:
        manifest = backups.create(rt.settings.database_url, rt.redis, db.session, folder)
    except backups.BackupError as error:
        raise click.ClickException(str(error)) from None
    emit(as_json, {"folder": str(folder), **manifest},
         f"backup in {folder}: {manifest['database']} at revision {manifest['schema_revision']}, "
         + ", ".join(f"{n} {name}" for name, n in manifest["streams"].items()))


@backup.command("restore")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
@with_appcontext
def restore_command(folder: Path, as_json: bool):
    """Restore FOLDER into the empty database (DATABASE_URL) and empty Redis database (REDIS_URL),
    rebuild Redis from SQL and reconcile. Exit 0 when the books agree, 3 when they need attention."""
    from controlplane import backup as backups
    from controlplane.runtime import runtime

    rt = runtime()
    try:
        report = backups.restore(rt.settings.database_url, rt.redis, folder)
    except backups.BackupError as error:
        raise click.ClickException(str(error)) from None
    data = {"streams": report.streams, "ingested": report.ingested, "dead_lettered": report.dead_lettered,
            "reconcile": report.reconcile}
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        click.echo(f"restored from {folder}: {report.ingested} usage events ingested, {report.dead_lettered} dead-lettered; "
                   f"reconcile: {report.reconcile.get('accounts')} accounts, "
                   + ("consistent" if report.consistent else f"{len(report.reconcile.get('findings', []))} finding(s)"))
        for finding in report.reconcile.get("findings", []):
            click.echo(f"  {finding['what']} #{finding['subject']}: expected {finding['expected']}, found {finding['found']}")
    if not report.consistent:
        raise click.exceptions.Exit(3)
