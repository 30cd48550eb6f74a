"""Fixtures for the user console: people with passwords, signed-in clients, a served model, and
usage written through the real ingestion path (workers/usage.py)."""
from __future__ import annotations

import itertools
import time

import pytest

from controlplane.services import billing, organisations
from relay.usage import UsageEvent
from tests import factories
from tests.helpers import login

PASSWORD = "correct horse battery"
_seq = itertools.count(1)


@pytest.fixture
def served(app):
    """Two priced models on an enabled channel (the upstream is never called in these tests)."""
    factories.channel("https://api.example.com/v1", models=("gpt-4o-mini", "gpt-4o"))
    factories.price("gpt-4o-mini", input="0.15", output="0.60")
    factories.price("gpt-4o", input="2.50", output="10")
    return ["gpt-4o", "gpt-4o-mini"]


def person(email: str | None = None, usd: str | None = None):
    user = factories.user(email or f"person{next(_seq)}@example.com", password=PASSWORD)
    if usd:
        billing.topup(factories.ACTOR, user.account, usd, "test funds")
    return user


def client_for(app, user):
    client = app.test_client()
    response = login(client, user.email, PASSWORD)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


@pytest.fixture
def ana(app):
    return person("ana@example.com", usd="10")


@pytest.fixture
def bob(app):
    return person("bob@example.com", usd="10")


@pytest.fixture
def as_ana(app, ana):
    return client_for(app, ana)


@pytest.fixture
def as_bob(app, bob):
    return client_for(app, bob)


def organisation(owner, name: str = "Acme"):
    return organisations.create_organisation(factories.ACTOR, owner, name)


def event(key, model: str = "gpt-4o-mini", cost: int = 1_000, started_at: float | None = None, status: int = 200, **fields) -> UsageEvent:
    started = time.time() if started_at is None else started_at
    return UsageEvent(request_id=f"req_{next(_seq):024x}", started_at=started, finished_at=started + 0.4, endpoint="/v1/chat/completions",
                      status=status, api_key_id=key.id, account_id=key.account_id, user_id=key.user_id, model=model, channel_id=1,
                      input_tokens=fields.get("input_tokens", 100), cache_read_tokens=fields.get("cache_read_tokens", 20),
                      cache_write_tokens=fields.get("cache_write_tokens", 5), output_tokens=fields.get("output_tokens", 50),
                      reasoning_tokens=fields.get("reasoning_tokens", 7), cost=cost, latency_ms=fields.get("latency_ms", 420), ttft_ms=120)


def ingest(*events: UsageEvent) -> None:
    """Write events as the usage worker does: request logs, charges, rollups, key spend."""
    from controlplane.extensions import db
    from workers.usage import write_batch

    write_batch(list(events))
    db.session.commit()
