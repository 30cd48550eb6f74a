"""`switchboard web`: the consoles and the admin API under gunicorn with gevent workers (wsgi.py).

The relay's own HTTP server carries /v1 traffic; the Flask consoles are served by gunicorn, which
restarts a crashed worker, recycles workers and drains them gracefully on SIGTERM.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]


def gunicorn_argv(host: str, port: int, workers: int, timeout: int) -> list[str]:
    argv = [sys.executable, "-m", "gunicorn", "--worker-class", "gevent", "--workers", str(workers), "--bind", f"{host}:{port}",
            "--chdir", str(ROOT), "--timeout", str(timeout), "--graceful-timeout", str(timeout), "--access-logfile", "-",
            "--forwarded-allow-ips", os.environ.get("SWITCHBOARD_TRUSTED_PROXIES", "127.0.0.1")]
    if os.environ.get("SWITCHBOARD_LOG_FORMAT", "").strip().lower() == "json":  # gunicorn's own lines too (docs/operations.md)
        argv += ["--logger-class", "controlplane.gunicorn_logging.JsonLogger"]
    return [*argv, "wsgi:app"]


@click.command("web")
@click.option("--host", default=None, help="Address to listen on (default SWITCHBOARD_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default SWITCHBOARD_PORT or 8000).")
@click.option("--workers", default=None, type=int, help="gunicorn workers (default SWITCHBOARD_WEB_WORKERS or 2).")
@click.option("--timeout", default=60, type=int, show_default=True, help="Seconds a request may take before its worker is restarted.")
def web_command(host, port, workers, timeout):
    """Serve the consoles and the admin API (gunicorn, gevent workers)."""
    host = host or os.environ.get("SWITCHBOARD_HOST", "127.0.0.1")
    port = port or int(os.environ.get("SWITCHBOARD_PORT", "8000"))
    workers = workers or int(os.environ.get("SWITCHBOARD_WEB_WORKERS", "2"))
    if os.environ.get("SWITCHBOARD_LOG_FORMAT", "").strip().lower() != "json":  # gunicorn says where it listens, in JSON
        click.echo(f"control plane on http://{host}:{port} (gunicorn, {workers} gevent workers)")
    sys.stdout.flush()
    os.execv(sys.executable, gunicorn_argv(host, port, workers, timeout))  # gunicorn on our WSGI app, argv from code  # nosec B606
