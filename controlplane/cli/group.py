"""The click group: lazily loaded commands, embedded Redis for a bare machine, --json output.

Commands are imported only when invoked, so `switchboard relay` never loads the control plane's
SQL stack into the relay process (and every command starts faster).
"""
from __future__ import annotations

import atexit
import importlib
import json
import os

import click
from flask.cli import FlaskGroup

from controlplane.embedded_redis import EmbeddedRedis
from relay.settings import DEFAULT_INSTANCE

_embedded: EmbeddedRedis | None = None

COMMANDS = {
    "operator": "controlplane.cli.manage:operator",
    "user": "controlplane.cli.manage:user",
    "group": "controlplane.cli.manage:group",
    "topup": "controlplane.cli.manage:topup",
    "balance": "controlplane.cli.manage:balance",
    "key": "controlplane.cli.manage:key",
    "channel": "controlplane.cli.routing:channel",  # manage's group, plus `channel test`
    "limits": "controlplane.cli.routing:limits",
    "route": "controlplane.cli.routing:route",
    "price": "controlplane.cli.manage:price",
    "invite": "controlplane.cli.invites:invite",
    "demo": "controlplane.cli.demo:demo",
    "up": "controlplane.cli.processes:up_command",
    "relay": "controlplane.cli.relay:relay_command",
    "web": "controlplane.cli.web:web_command",
    "worker": "controlplane.cli.processes:worker_command",
    "scheduler": "controlplane.cli.processes:scheduler_command",
    "ingest": "controlplane.cli.processes:ingest_command",
    "backup": "controlplane.cli.backup:backup",
}


def ensure_redis_url() -> None:
    """With no REDIS_URL, use (starting if needed) the embedded Redis under the instance folder."""
    global _embedded
    if os.environ.get("REDIS_URL"):
        return
    from pathlib import Path

    _embedded = EmbeddedRedis(Path(os.environ.get("SWITCHBOARD_INSTANCE", DEFAULT_INSTANCE)).resolve())
    os.environ["REDIS_URL"] = _embedded.acquire()
    atexit.register(_embedded.release)


def embedded() -> EmbeddedRedis | None:
    """The embedded Redis this process registered with, if any (None: it was given a REDIS_URL)."""
    return _embedded


def make_app():
    ensure_redis_url()
    from controlplane.app import create_app

    return create_app()


def emit(as_json: bool, data: dict, human: str) -> None:
    if as_json:
        click.echo(json.dumps(data, default=str, sort_keys=True))
    else:
        click.echo(human)


json_option = click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")


class SwitchboardGroup(FlaskGroup):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is not None:
            module, _, attr = target.partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=SwitchboardGroup, create_app=make_app, add_default_commands=False, add_version_option=False, load_dotenv=False)
def cli():
    """Switchboard: an LLM API gateway. Manage it, and start its processes."""
