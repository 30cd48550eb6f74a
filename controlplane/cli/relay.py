"""`switchboard relay`: the relay alone. Deliberately light: it builds no Flask app and loads no SQL
driver; it needs only Redis and the encryption key (both from the environment or the instance)."""
from __future__ import annotations

from dataclasses import replace

import click


@click.command("relay")
@click.option("--host", default=None, help="Default SWITCHBOARD_RELAY_HOST or 0.0.0.0")
@click.option("--port", default=None, type=int, help="Default SWITCHBOARD_RELAY_PORT or 8001")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256), help="Processes sharing the port.")
def relay_command(host, port, workers):
    """Serve /v1/* (the relay only)."""
    from controlplane.cli.group import ensure_redis_url
    from relay.processes import serve_processes
    from relay.settings import RelaySettings

    from relay import logs

    logs.configure()
    ensure_redis_url()
    settings = RelaySettings.from_env()
    if not settings.encryption_key:
        raise click.ClickException("no encryption key: set SWITCHBOARD_ENCRYPTION_KEY or run `switchboard db upgrade` in this instance first")
    serve_processes(replace(settings, host=host or settings.host, port=port or settings.port), workers)
