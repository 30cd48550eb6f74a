"""The click group: app creation for commands, embedded Redis for a bare machine, --json output."""
from __future__ import annotations

import atexit
import json
import os

import click
from flask.cli import FlaskGroup

from controlplane.embedded_redis import EmbeddedRedis
from relay.settings import DEFAULT_INSTANCE

_embedded: EmbeddedRedis | None = None


def ensure_redis_url() -> None:
    """With no REDIS_URL, use (starting if needed) the embedded Redis under the instance folder."""
    global _embedded
    if os.environ.get("REDIS_URL"):
        return
    from pathlib import Path

    _embedded = EmbeddedRedis(Path(os.environ.get("SWITCHBOARD_INSTANCE", DEFAULT_INSTANCE)).resolve())
    os.environ["REDIS_URL"] = _embedded.acquire()
    atexit.register(_embedded.release)


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


@click.group(cls=FlaskGroup, create_app=make_app, add_default_commands=False, add_version_option=False, load_dotenv=False)
def cli():
    """Switchboard: an LLM API gateway. Manage it, and start its processes."""


from controlplane.cli import manage, processes, routing  # noqa: E402,F401  (registers the commands)
