"""Management commands for routing and health: limits, model routes (strategy, aliases), and testing a channel now."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from controlplane.cli.group import emit, json_option
from controlplane.cli.manage import channel
from controlplane.extensions import db
from controlplane.models import ApiKey, Channel, ModelRoute
from controlplane.services import limits as limit_service
from controlplane.services import model_routes
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


@click.group()
def route():
    """Model routes: a model's selection strategy, and aliases standing for a list of models."""


@route.command("set")
@click.argument("model")
@click.option("--strategy", type=click.Choice(["priority", "latency", "cost"]), default="priority", show_default=True,
              help="How a priority tier's channels are chosen.")
@click.option("--alias-for", "targets", default=None, help="Comma-separated models this name stands for, tried in order.")
@json_option
@with_appcontext
def route_set(model, strategy, targets, as_json):
    row = model_routes.set_route(Actor.cli(), model, strategy=strategy, targets=targets)
    data = model_routes.describe(row)
    emit(as_json, data, f"{row.model}: {row.strategy}" + (f", alias for {' → '.join(row.targets)}" if row.targets else ""))


@route.command("list")
@json_option
@with_appcontext
def route_list(as_json):
    rows = [model_routes.describe(r) for r in model_routes.all_routes()]
    human = "\n".join(f"{r['model']}: {r['strategy']}" + (f", alias for {' → '.join(r['targets'])}" if r["targets"] else "") for r in rows)
    emit(as_json, rows, human or "no model routes")


@route.command("delete")
@click.argument("model")
@json_option
@with_appcontext
def route_delete(model, as_json):
    row = db.session.scalar(db.select(ModelRoute).where(ModelRoute.model == model))
    if row is None:
        raise NotFound(f"model route {model}")
    model_routes.delete_route(Actor.cli(), row.id)
    emit(as_json, {"deleted": model}, f"{model}: deleted")


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


__all__ = ["channel", "limits", "route"]  # `channel` gains its `test` subcommand here
