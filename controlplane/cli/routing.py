"""Management commands for routing and health: limits, and testing a channel now."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from controlplane.cli.group import emit, json_option
from controlplane.cli.manage import channel
from controlplane.extensions import db
from controlplane.models import ApiKey, Channel
from controlplane.services import limits as limit_service
from controlplane.services import users
from controlplane.services.base import Actor, NotFound
from controlplane.services.groups import group_by_name


@click.group()
def limits():
    """Rate limits and upstream capacity."""


def _target(key_id, email, group, channel_id):
    given = [v for v in (key_id, email, group, channel_id) if v is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --key, --user, --group, --channel")
    if email is not None:
        return users.user_by_email(email)
    if group is not None:
        return group_by_name(group)
    row = db.session.get(ApiKey if key_id is not None else Channel, key_id if key_id is not None else channel_id)
    if row is None:
        raise NotFound(f"{'key' if key_id is not None else 'channel'} {key_id if key_id is not None else channel_id}")
    return row


@limits.command("set")
@click.option("--key", "key_id", type=int, default=None, help="An API key's id.")
@click.option("--user", "email", default=None)
@click.option("--group", default=None)
@click.option("--channel", "channel_id", type=int, default=None)
@click.option("--each-key", is_flag=True, help="With --channel: the capacity of each of its keys.")
@click.option("--rpm", default=None, help="Requests per minute; 0 removes the limit.")
@click.option("--tpm", default=None, help="Tokens per minute; 0 removes the limit.")
@click.option("--concurrency", default=None, help="Concurrent requests; 0 removes the limit.")
@json_option
@with_appcontext
def limits_set(key_id, email, group, channel_id, each_key, rpm, tpm, concurrency, as_json):
    target = _target(key_id, email, group, channel_id)
    given = {k: v for k, v in (("rpm", rpm), ("tpm", tpm), ("concurrency", concurrency)) if v is not None}
    if not given:
        raise click.UsageError("give at least one of --rpm, --tpm, --concurrency")
    after = limit_service.set_limits(Actor.cli(), target, each_key=each_key, **given)
    emit(as_json, after, ", ".join(f"{k} {v if v else 'unlimited'}" for k, v in after.items()))


@channel.command("test")
@click.argument("channel_id", type=int)
@json_option
@with_appcontext
def channel_test(channel_id, as_json):
    """Probe a channel's keys now (changes nothing)."""
    from controlplane.services.channel_health import test_channel

    results = test_channel(channel_id)
    data = {"channel_id": channel_id, "ok": any(r.ok for r in results), "results": [r.as_dict() for r in results]}
    human = "\n".join(f"key {r.key_id}: {r.verdict.value} {r.latency_ms} ms {r.message}" for r in results) or "no keys"
    emit(as_json, data, human)
    if not data["ok"]:
        raise click.exceptions.Exit(3)


__all__ = ["channel", "limits"]  # `channel` gains its `test` subcommand here
