"""Management commands. Their names and options are an interface: scripts call them."""
from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from controlplane.cli.group import emit, json_option
from controlplane.models import Role
from controlplane.services import billing, groups, keys, prices, users
from controlplane.services import channels as channel_service
from controlplane.services.base import Actor, ServiceError
from controlplane.validation import timestamp
from relay.pricing import micro_to_usd


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@click.group()
def operator():
    """Operators of the console."""


@operator.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", type=click.Choice(["admin", "operator", "support"]), default="admin", show_default=True)
@json_option
@with_appcontext
def operator_create(email, password, role, as_json):
    user = users.create_operator(Actor.cli(), email, password, Role(role))
    emit(as_json, {"id": user.id, "email": user.email, "role": user.role}, f"operator {user.email} ({user.role}) created")


@click.group()
def user():
    """End users (customers)."""


@user.command("create")
@click.option("--email", required=True)
@click.option("--password", default=None)
@click.option("--group", default=None)
@json_option
@with_appcontext
def user_create(email, password, group, as_json):
    created = users.create_user(Actor.cli(), email, password, group)
    emit(as_json, {"id": created.id, "email": created.email, "account_id": created.account_id}, f"user {created.email} created (account {created.account_id})")


@user.command("reset-2fa")
@click.option("--email", required=True)
@json_option
@with_appcontext
def user_reset_2fa(email, as_json):
    """Turn off someone's two-factor sign-in (lost phone and recovery codes); they sign in with the
    password alone, and an admin who must have it is sent to set it up again."""
    from controlplane.services import two_factor

    target = users.user_by_email(email)
    two_factor.reset(Actor.cli(), target)
    emit(as_json, {"id": target.id, "email": target.email, "two_factor": False}, f"two-factor sign-in is off for {target.email}")


@click.group()
def group():
    """User groups."""


@group.command("create")
@click.argument("name")
@click.option("--multiplier", default="1.0", show_default=True, help="Price multiplier, e.g. 0.9 for 10% off.")
@click.option("--models", default="", help="Comma-separated model patterns (globs); empty allows all.")
@click.option("--default", "is_default", is_flag=True, help="New users join this group.")
@click.option("--queue-seconds", type=int, default=None, help="Seconds a request waits when its model's channels are full (default 10; 0: 429 at once).")
@click.option("--priority", type=int, default=None, help="0-1000: higher groups are served first from the capacity queue (default 0).")
@json_option
@with_appcontext
def group_create(name, multiplier, models, is_default, queue_seconds, priority, as_json):
    created = groups.create_group(Actor.cli(), name, multiplier, split_list(models), is_default, queue_seconds=queue_seconds, priority=priority)
    emit(as_json, groups.describe(created), f"group {created.name} created")


@click.command("topup")
@click.option("--user", "email", required=True)
@click.option("--usd", required=True)
@click.option("--reason", required=True)
@json_option
@with_appcontext
def topup(email, usd, reason, as_json):
    """Add credit to a user's account (a ledger entry)."""
    target = users.user_by_email(email)
    entry = billing.topup(Actor.cli(), target.account, usd, reason)
    emit(as_json, billing.entry_dict(entry), f"added {micro_to_usd(entry.amount)} to {target.email}")


@click.command("balance")
@click.option("--user", "email", required=True)
@json_option
@with_appcontext
def balance(email, as_json):
    """A user's settled balance and open holds."""
    target = users.user_by_email(email)
    _, held = billing.live_balance(target.account_id)
    settled = target.account.balance
    emit(as_json, {"balance_micro_usd": settled, "held_micro_usd": held},
         f"{target.email}: balance {micro_to_usd(settled)}, held {micro_to_usd(held)}")


@click.group()
def key():
    """API keys."""


@key.command("create")
@click.option("--user", "email", required=True)
@click.option("--name", default="")
@click.option("--credit-limit-usd", default=None)
@click.option("--models", default="")
@click.option("--ip-allow", default="", help="Comma-separated addresses or CIDR ranges.")
@click.option("--expires", default=None, help="ISO 8601, e.g. 2027-01-01T00:00:00Z")
@json_option
@with_appcontext
def key_create(email, name, credit_limit_usd, models, ip_allow, expires, as_json):
    owner = users.user_by_email(email)
    expires_at = timestamp(expires, "expires") if expires else None
    created, secret = keys.create_key(Actor.cli(), owner, name, credit_limit_usd, split_list(models), split_list(ip_allow), expires_at)
    emit(as_json, {"id": created.id, "key": secret, "prefix": created.prefix}, secret)


@click.group()
def channel():
    """Upstream channels."""


def parse_map(value: str) -> dict[str, str]:
    result = {}
    for pair in split_list(value):
        left, sep, right = pair.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ServiceError(f"--model-map takes from=to pairs, got '{pair}'", "model_map")
        result[left.strip()] = right.strip()
    return result


def parse_config(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ServiceError("--config must be a JSON object", "config") from None
    if not isinstance(value, dict):
        raise ServiceError("--config must be a JSON object", "config")
    return value


@channel.command("add")
@click.option("--name", required=True)
@click.option("--type", "type_", required=True)
@click.option("--base-url", required=True)
@click.option("--keys", "keys_", required=True, help="Comma-separated upstream keys.")
@click.option("--models", required=True, help="Comma-separated model names.")
@click.option("--priority", default=0, type=int, show_default=True)
@click.option("--weight", default=1, type=int, show_default=True)
@click.option("--groups", default="")
@click.option("--model-map", default="", help="from=to pairs, comma-separated.")
@click.option("--tag", default=None)
@click.option("--config", "config_json", default=None,
              help='Type-specific settings as JSON, e.g. \'{"api_version": "2024-10-21", "timeouts": {"first_byte": 60}}\'.')
@json_option
@with_appcontext
def channel_add(name, type_, base_url, keys_, models, priority, weight, groups, model_map, tag, config_json, as_json):
    created = channel_service.add_channel(
        Actor.cli(), name=name, type=type_, base_url=base_url, keys=split_list(keys_), models=split_list(models),
        model_map=parse_map(model_map), groups=split_list(groups), priority=priority, weight=weight, tag=tag,
        config=parse_config(config_json),
    )
    emit(as_json, channel_service.describe(created), f"channel {created.name} added (id {created.id})")


@click.group()
def price():
    """Model prices (USD per 1M tokens)."""


@price.command("set")
@click.argument("model")
@click.option("--input", "input_", default=None, help="USD per 1M input tokens (required unless priced per unit)")
@click.option("--output", default=None, help="USD per 1M output tokens (required unless priced per unit)")
@click.option("--cache-read", default=None)
@click.option("--cache-write", default=None)
@click.option("--reasoning", default=None)
@click.option("--per-request", default=None, help="USD per request")
@click.option("--max-output-tokens", default=None, type=int, help="Output tokens held when a request sets no max_tokens")
@click.option("--per-image", default=None, help="USD per generated image (when no --image-prices tier matches)")
@click.option("--image-prices", default=None, help='USD per image by size/quality, JSON: {"1024x1024/hd": "0.08", "*/*": "0.04"}')
@click.option("--per-1m-chars", default=None, help="USD per 1M characters of speech input (/v1/audio/speech)")
@click.option("--per-minute-audio", default=None, help="USD per minute of transcribed audio, billed per second")
@click.option("--now", "now_", is_flag=True, help="Take effect immediately.")
@click.option("--effective", default=None, help="ISO 8601 start time.")
@click.option("--reason", default=None)
@json_option
@with_appcontext
def price_set(model, input_, output, cache_read, cache_write, reasoning, per_request, max_output_tokens, per_image, image_prices,
              per_1m_chars, per_minute_audio, now_, effective, reason, as_json):
    if now_ == bool(effective):
        raise click.UsageError("give exactly one of --now or --effective")
    when = timestamp(effective, "effective") if effective else None
    row = prices.set_price(
        Actor.cli(), model, input=input_, output=output, cache_read=cache_read, cache_write=cache_write,
        reasoning=reasoning, per_request=per_request, max_output_tokens=max_output_tokens, per_image=per_image,
        image_prices=image_prices, per_1m_chars=per_1m_chars, per_minute_audio=per_minute_audio, effective_from=when,
        reason=reason or ("set from the CLI with --now" if now_ else None), enforce_notice=not now_,
    )
    emit(as_json, prices.describe(row), f"price for {row.model} from {row.effective_from.isoformat()}")
