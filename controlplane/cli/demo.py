"""`switchboard demo seed`: a realistic operator's week — channels of several types and states,
prices (one change scheduled), groups, customers with top-ups and keys, a week of traffic across
models, refunds and bans — written through the services and the real ingestion path.

For trying the console and for the README's screenshots; never for a production database.
"""
from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from controlplane.cli.demo_traffic import Customer, generate, ingest
from controlplane.cli.group import emit, json_option
from controlplane.extensions import db
from controlplane.models import ChannelEvent, ChannelStatus, LedgerEntry, ModelPrice, Role, User, utcnow
from controlplane.services import bans, billing, channels, groups, keys, model_routes, prices, refunds, users
from controlplane.services.base import Actor, commit
from relay.adapters import REGISTRY
from relay.pricing import usd_to_micro

SEEDER = Actor(name="demo seed")
DEMO_ADMIN = "admin@switchboard.local"  # the operator to sign in as; its password is printed once
# name, preferred type, base URL, models, tag, priority, weight, cost %, keys, state (+ reason)
CHANNELS = [
    ("OpenAI primary", "openai", "https://api.openai.com/v1", ["gpt-4o", "gpt-4o-mini", "o3-mini"], "prod", 10, 5, 72, 3, None),
    ("Anthropic", "anthropic", "https://api.anthropic.com", ["claude-sonnet-4", "claude-haiku-3.5"], "prod", 10, 3, 78, 2, None),
    ("DeepSeek", "deepseek", "https://api.deepseek.com/v1", ["deepseek-chat", "deepseek-reasoner"], "budget", 5, 1, 55, 2, None),
    ("Groq Llama", "openai", "https://api.groq.com/openai/v1", ["llama-3.3-70b"], "budget", 5, 1, 50, 1,
     ("auto_disabled", "5 failed probes in a row — upstream said: upstream timed out", 3)),
    ("Azure OpenAI EU", "azure", "https://contoso-eu.openai.azure.com", ["gpt-4o"], "prod", 8, 2, 65, 2,
     ("disabled", "Quota review with Microsoft", 50)),
    ("Lab vLLM", "openai", "http://vllm.lab.internal:8100/v1", ["qwen2.5-72b"], "lab", 0, 1, None, 1, None),
]
# model → USD per 1M tokens: input, cached input, output
PRICES = {"gpt-4o": ("2.50", "1.25", "10"), "gpt-4o-mini": ("0.15", "0.075", "0.60"), "o3-mini": ("1.10", "0.55", "4.40"),
          "claude-sonnet-4": ("3", "0.30", "15"), "claude-haiku-3.5": ("0.80", "0.08", "4"), "deepseek-chat": ("0.27", "0.07", "1.10"),
          "deepseek-reasoner": ("0.55", "0.14", "2.19"), "llama-3.3-70b": ("0.59", None, "0.79")}
CUSTOMERS = [("ana@acme.dev", "pro", 6), ("li.wei@example.cn", "default", 4), ("sam@startup.io", "default", 3),
             ("research@uni.example.edu", "pro", 3), ("noor@agency.example", "default", 2), ("kai@indie.dev", "trial", 1),
             ("jo@freelance.example", "default", 1), ("ops@bigcorp.example", "pro", 5), ("eva@labs.example", "default", 1),
             ("tom@hobby.example", "trial", 0.5)]


def _type(preferred: str) -> str:
    return preferred if preferred in REGISTRY else "openai"


def _channels(rng) -> tuple[dict, list]:
    routes: dict[str, list] = {}
    made = []
    for name, kind, url, models, tag, priority, weight, cost, key_count, state in CHANNELS:
        secrets_ = [f"sk-demo-{secrets.token_hex(12)}" for _ in range(key_count)]
        # Demo channels are never called: saved without asking DNS, which a laptop offline cannot.
        channel = channels.add_channel(SEEDER, name=name, type=_type(kind), base_url=url, keys=secrets_, models=models, tag=tag,
                                       priority=priority, weight=weight, cost_bp=None if cost is None else cost * 100, lookup=False)
        made.append((channel, state))
        for model in models:
            routes.setdefault(model, []).extend((channel.id, k.id) for k in channel.keys)
    openai = made[0][0]
    dead, when = openai.keys[-1], utcnow() - timedelta(hours=5)
    db.session.add(ChannelEvent(channel_id=openai.id, channel_key_id=dead.id, from_status="enabled", to_status="auto_disabled",
                                reason="upstream said: Incorrect API key provided", actor="relay", created_at=when))
    dead.status, dead.status_reason, dead.status_since = ChannelStatus.AUTO_DISABLED.value, "upstream said: Incorrect API key provided", when
    for channel, state in made:
        # the last health probe, as a running instance would show it in the channel list (its own
        # random numbers: the week of traffic stays the same as before)
        probe = random.Random(channel.id)  # nosec B311 - demo numbers, nothing secret
        channel.probed_at = utcnow() - timedelta(minutes=probe.randint(2, 9))
        down = channel.base_url.startswith("http://") or (state is not None and state[0] == "auto_disabled")
        channel.probe_latency_ms = None if down else probe.randint(180, 900)
        channel.probe_message = "upstream timed out" if down else "ok"
        if state is None:
            continue
        status, reason, hours_ago = state
        when = utcnow() - timedelta(hours=hours_ago)
        actor = "health" if status == "auto_disabled" else "ops@switchboard.local"
        db.session.add(ChannelEvent(channel_id=channel.id, from_status="enabled", to_status=status, reason=reason, actor=actor, created_at=when))
        channel.status, channel.status_reason, channel.status_since = status, reason, when
    commit()
    return routes, made


def _prices(now) -> dict:
    """Prices in force since last month (written as rows: the service only schedules forward),
    plus one change scheduled through the service with the usual notice."""
    from controlplane.snapshot import price_view

    views = {}
    for model, (inp, cached, out) in PRICES.items():
        row = ModelPrice(model=model, input=usd_to_micro(inp), output=usd_to_micro(out),
                         cache_read=None if cached is None else usd_to_micro(cached), per_request=0,
                         effective_from=now - timedelta(days=30), reason="launch price list")
        db.session.add(row)
        db.session.flush()
        views[model] = price_view(row)
    commit()
    prices.set_price(SEEDER, "gpt-4o", input="2.00", output="8.00", cache_read="1.00", effective_from=now + timedelta(days=7, hours=2),
                     reason="upstream price cut passed on")
    # An alias callers (and the playground) can ask for, and a model routed by measured latency.
    model_routes.set_route(SEEDER, "smart", targets=["claude-sonnet-4", "gpt-4o"])
    model_routes.set_route(SEEDER, "gpt-4o-mini", strategy="latency")
    return views


def _customers(rng, group_bp: dict) -> list[Customer]:
    out = []
    for email, group, weight in CUSTOMERS:
        user = users.create_user(SEEDER, email, None, group)
        billing.topup(SEEDER, user.account, str(rng.choice([50, 100, 200, 500])), "card payment")
        made = [keys.create_key(SEEDER, user, name)[0] for name in ("production", "staging")[: 1 + (weight >= 3)]]
        models = tuple(m for m in PRICES if group != "trial" or m.endswith("mini") or m.startswith("deepseek"))
        out.append(Customer(user.id, user.account_id, tuple(k.id for k in made), group_bp[group], models, weight))
    return out


@dataclass(frozen=True)
class Stage:
    """What traffic needs: who sends it, where each model is routed, and what it costs."""

    customers: list[Customer]
    routes: dict  # model → [(channel id, channel key id)]
    prices: dict  # model → its price view


def stage(rng: random.Random) -> tuple[Stage, str | None]:
    """Operators, groups, channels, prices and customers, without any traffic; and the demo admin's
    password when this run created it (`up` creates no first operator once one exists, so without it
    the seeded instance could not be signed into)."""
    now = utcnow()
    password = None
    for email, role in ((DEMO_ADMIN, Role.ADMIN), ("ops@switchboard.local", Role.OPERATOR), ("help@switchboard.local", Role.SUPPORT)):
        if db.session.scalar(select(User.id).where(User.email == email)) is None:
            secret = secrets.token_urlsafe(12)
            users.create_operator(SEEDER, email, secret, role)
            if email == DEMO_ADMIN:
                password = secret
    groups.default_group()
    groups.create_group(SEEDER, "pro", "0.85", [], rpm=600, tpm=2_000_000, concurrency=50)
    groups.create_group(SEEDER, "trial", "1.0", ["*-mini", "deepseek-*"], rpm=20, tpm=50_000, concurrency=2)
    group_bp = {"default": 10_000, "pro": 8_500, "trial": 10_000}
    routes, _ = _channels(rng)
    price_views = _prices(now)
    customers = _customers(rng, group_bp)
    return Stage(customers, {m: r for m, r in routes.items() if m in price_views}, price_views), password


def seed(days: int = 7, per_hour: int = 40, rng_seed: int = 7) -> dict:
    rng = random.Random(rng_seed)  # reproducible demo traffic, nothing secret  # nosec B311
    staged, password = stage(rng)
    customers = staged.customers
    charged, count = ingest(generate(rng, time.time(), days, per_hour, customers, staged.routes, staged.prices))
    for account_id, amount in charged.items():
        billing.apply_live(account_id, -amount)  # the relay would have debited Redis as it went
    _aftermath(customers)
    result = {"channels": len(CHANNELS), "customers": len(customers), "requests": count, "charged_micro_usd": sum(charged.values())}
    if password:
        result["operator"] = {"email": DEMO_ADMIN, "password": password}
    return result


def _aftermath(customers: list[Customer]) -> None:
    """What a week leaves behind: a refund, goodwill after an outage, a few bans."""
    first = db.session.get(User, customers[0].user_id)
    charge = db.session.scalar(select(LedgerEntry).where(LedgerEntry.account_id == first.account_id, LedgerEntry.kind == "charge")
                               .order_by(LedgerEntry.amount).limit(1))
    if charge is not None:
        refunds.refund_request(SEEDER, charge.request_id, None, "Answer was cut off by an upstream fault")
    refunds.goodwill(SEEDER, db.session.get(User, customers[1].user_id).account, "5", "Credit for the Anthropic outage on Tuesday")
    bans.ban(SEEDER, "user", str(customers[-1].user_id), "Card chargeback under review", utcnow() + timedelta(days=3))
    bans.ban(SEEDER, "ip", "198.51.100.0/24", "Credential-stuffing attempts against sign-in")
    lifted = bans.ban(SEEDER, "ip", "192.0.2.44", "Burst of invalid keys")
    bans.lift(SEEDER, lifted)
    _organisation(first, db.session.get(User, customers[2].user_id))


def _organisation(owner: User, member: User) -> None:
    """A team: an organisation its owner funds, a member with a monthly allowance, a key each."""
    from controlplane.services import organisations

    org = organisations.create_organisation(SEEDER, owner, "Acme Labs")
    billing.topup(SEEDER, org, "250", "purchase order 1187")
    _, token = organisations.invite(SEEDER, organisations.membership(org.id, owner.id), None, "member")
    joined = organisations.accept(SEEDER, member, organisations.open_invitation(token))
    organisations.set_allowance(SEEDER, organisations.membership(org.id, owner.id), joined.id, "40")
    keys.create_key(SEEDER, owner, "acme-backend", account_id=org.id)
    keys.create_key(SEEDER, member, "acme-notebooks", account_id=org.id)


@click.group()
def demo():
    """Demo data for trying the console (never on a production database)."""


@demo.command("seed")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 60))
@click.option("--per-hour", default=40, show_default=True, type=click.IntRange(1, 5000), help="Average requests per hour at peak.")
@click.option("--keys", "key_count", default=0, type=click.IntRange(0, 10_000_000),
              help="Instead of the week: bulk-create this many API keys (with --users customers), on any database.")
@click.option("--users", "user_count", default=0, type=click.IntRange(0, 5_000_000), help="Customers for --keys (default: keys / 2).")
@click.option("--credit", default="10", show_default=True, help="USD each bulk customer's account opens with.")
@click.option("--keys-file", type=click.File("w"), default=None, help="Write every bulk key's secret here, one a line.")
@json_option
@with_appcontext
def demo_seed(days, per_hour, key_count, user_count, credit, keys_file, as_json):
    if key_count or user_count:
        _bulk(key_count, user_count or max(1, key_count // 2), credit, keys_file, as_json)
        return
    if db.session.scalar(select(ModelPrice.id).limit(1)) is not None:
        raise click.UsageError("this database already has prices: seed an empty instance")
    result = seed(days, per_hour)
    text = f"seeded {result['channels']} channels, {result['customers']} customers and {result['requests']} requests over {days} days"
    if "operator" in result:
        text += f"\nDemo operator (shown once): {result['operator']['email']} / {result['operator']['password']}"
    emit(as_json, result, text)


def _bulk(key_count: int, user_count: int, credit: str, keys_file, as_json: bool) -> None:
    from controlplane import bulk_customers
    from controlplane.runtime import runtime

    def progress(users_done: int, keys_done: int) -> None:
        if not as_json:
            click.echo(f"  {users_done:,} customers, {keys_done:,} keys", err=True)

    result = bulk_customers.create(runtime().redis, user_count, key_count, usd_to_micro(credit), sample=0, secrets_out=keys_file,
                                   progress=progress)
    data = {"users": result.users, "keys": result.keys, "seconds": round(result.seconds, 1)}
    emit(as_json, data, f"created {result.users:,} customers and {result.keys:,} keys in {result.seconds:.1f} s")
