"""Rows for tests, made through the service layer so every invariant holds as in production."""
from __future__ import annotations

import itertools

from controlplane.services import billing, channels, groups, keys, prices, users
from controlplane.services.base import Actor

_seq = itertools.count(1)
ACTOR = Actor(name="test")


def user(email: str | None = None, group: str | None = None, password: str | None = None):
    return users.create_user(ACTOR, email or f"user{next(_seq)}@example.com", password, group)


def funded_user(usd: str = "10", **kwargs):
    created = user(**kwargs)
    billing.topup(ACTOR, created.account, usd, "test funds")
    return created


def api_key(owner, **kwargs):
    return keys.create_key(ACTOR, owner, **kwargs)


def channel(base_url: str, models=("gpt-4o-mini",), keys_=("sk-upstream-1",), **kwargs):
    return channels.add_channel(ACTOR, name=kwargs.pop("name", f"channel-{next(_seq)}"), type=kwargs.pop("type", "openai"),
                                base_url=base_url, keys=list(keys_), models=list(models), **kwargs)


def group_queue(seconds: int, name: str | None = None, priority: int | None = None):
    """Set a group's capacity queue (the default group unless named); 0 answers 429 at once."""
    group = groups.group_by_name(name) if name else groups.default_group()
    return groups.update_group(ACTOR, group, multiplier=f"{group.multiplier_bp / 10_000:g}", model_patterns=list(group.model_patterns or []),
                               rpm=group.rpm, tpm=group.tpm, concurrency=group.concurrency, queue_seconds=seconds, priority=priority)


def price(model: str = "gpt-4o-mini", input: str = "0.15", output: str = "0.60", **kwargs):
    return prices.set_price(ACTOR, model, input=input, output=output, enforce_notice=False, **kwargs)
