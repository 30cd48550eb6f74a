"""What the console sets, the relay enforces: a real relay app (in-process, real Redis, a fake
upstream on a real socket) fed by the snapshot the control plane publishes."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select
from werkzeug.test import Client

from controlplane import key_rebuild
from controlplane.extensions import db
from controlplane.models import RequestLog
from controlplane.runtime import runtime
from controlplane.services import billing, keys, organisations
from controlplane.snapshot import publish
from relay import playground
from relay.quota import key_day_key
from relay.server import build_relay
from tests import factories
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import csrf_token
from workers.usage import ingest

from .conftest import client_for, organisation, person

FLAT = 10_000  # µ$: every request costs exactly one cent, and holds exactly that


@pytest.fixture(scope="module")
def upstream():
    fake = FakeOpenAI(models=["flat"])
    yield fake
    fake.close()


@pytest.fixture
def relay(app, upstream):
    factories.channel(upstream.url, models=("flat",))
    factories.price("flat", input="0", output="0", per_request="0.01")
    relay_app = build_relay(app.config["SWITCHBOARD"].relay_settings(), redis=runtime().redis)

    class Relay:
        def call(self, secret: str):
            relay_app.holder.refresh()  # what the pub/sub follower does within milliseconds
            response = Client(relay_app).post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                              json={"model": "flat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
            return response.status_code, response.get_json()

    return Relay()


def code(result) -> str:
    status, body = result
    return "ok" if status == 200 else body["error"]["code"]


def test_a_daily_budget_set_in_the_console_stops_the_key_at_its_limit(relay, app):
    user = person(usd="1")
    key, secret = keys.create_key(factories.ACTOR, user, "budgeted", daily_budget_usd="0.02")
    assert [code(relay.call(secret)) for _ in range(3)] == ["ok", "ok", "key_daily_budget_reached"]
    keys.update_key(factories.ACTOR, key, name="budgeted", daily_budget_usd="0.03")
    assert code(relay.call(secret)) == "ok"


def test_a_member_allowance_stops_the_members_keys_and_raising_it_takes_effect(relay, app):
    owner, member = person(), person()
    org = organisation(owner)
    billing.topup(factories.ACTOR, org, "1", "org funds")
    by = organisations.membership(org.id, owner.id)
    _, token = organisations.invite(factories.ACTOR, by, None, "member")
    joined = organisations.accept(factories.ACTOR, member, organisations.open_invitation(token))
    organisations.set_allowance(factories.ACTOR, by, joined.id, "0.01")
    _, first = keys.create_key(factories.ACTOR, member, "one", account_id=org.id)
    _, second = keys.create_key(factories.ACTOR, member, "two", account_id=org.id)
    assert code(relay.call(first)) == "ok"
    assert code(relay.call(second)) == "member_allowance_reached"
    organisations.set_allowance(factories.ACTOR, by, joined.id, "0.02")
    assert code(relay.call(second)) == "ok"
    assert runtime().quota.account(org.id)[0] == 1_000_000 - 2 * FLAT  # the organisation paid
    organisations.remove_member(factories.ACTOR, by, joined.id)
    assert code(relay.call(first)) == "api_key_disabled"


def test_budgets_survive_a_redis_loss_through_the_rollups(relay, app):
    user = person(usd="1")
    key, secret = keys.create_key(factories.ACTOR, user, "budgeted", daily_budget_usd="0.02")
    assert [code(relay.call(secret)) for _ in range(2)] == ["ok", "ok"]
    ingest()  # the worker writes the charges and rollups to SQL
    runtime().redis.flushdb()  # Redis lost everything: records, balances, the day's window
    assert code(relay.call(secret)) == "invalid_api_key" and runtime().redis.exists(key_day_key(key.account_id, key.id, time.time())) == 0
    publish()  # the scheduler republishes the routing snapshot
    key_rebuild.ensure(runtime().redis)  # and rebuilds records, balances and windows from SQL
    assert code(relay.call(secret)) == "key_daily_budget_reached"


def test_the_playground_token_calls_the_relay_as_the_chosen_key(relay, app):
    user = person(usd="1")
    key, _ = keys.create_key(factories.ACTOR, user, "playground key")
    client = client_for(app, user)
    response = client.post("/playground/token", json={"key_id": key.id}, headers={"X-CSRFToken": csrf_token(client, "/playground/")})
    token = response.get_json()["token"]
    assert token.startswith("sk-sbpg-") and response.get_json()["expires_at"] > time.time()
    assert code(relay.call(token)) == "ok"
    ingest()
    logged = db.session.scalar(select(RequestLog))
    assert (logged.api_key_id, logged.account_id, logged.cost) == (key.id, user.account_id, FLAT)
    outcome = client.get(f"/playground/requests/{logged.request_id}").get_json()
    assert outcome["cost_micro_usd"] == FLAT and outcome["status"] == "done"


def test_forged_tampered_and_expired_playground_tokens_are_refused(relay, app):
    user = person(usd="1")
    key, _ = keys.create_key(factories.ACTOR, user, "k")
    secret = playground.signing_key(app.config["SWITCHBOARD"].encryption_key)
    valid = playground.mint(secret, key.id, int(time.time()) + 60)
    other = playground.mint(secret, key.id + 1, int(time.time()) + 60)
    assert code(relay.call(valid)) == "ok"
    assert code(relay.call(valid[:-1] + ("0" if valid[-1] != "0" else "1"))) == "invalid_api_key"
    assert code(relay.call(other.replace(f"{key.id + 1}.", f"{key.id}.", 1))) == "invalid_api_key"
    assert code(relay.call(playground.mint(secret, key.id, int(time.time()) - 1))) == "invalid_api_key"
    assert code(relay.call(playground.mint(b"not the key" * 3, key.id, int(time.time()) + 60))) == "invalid_api_key"
    keys.set_key_status(factories.ACTOR, key, keys.KeyStatus.DISABLED)
    assert code(relay.call(valid)) == "api_key_disabled"


def test_a_banned_organisations_keys_are_refused_and_its_members_own_keys_are_not(relay, app):
    from controlplane.services import bans

    owner = person(usd="1")
    org = organisation(owner, "Banned Co")
    billing.topup(factories.ACTOR, org, "1", "org funds")
    _, org_secret = keys.create_key(factories.ACTOR, owner, "org key", account_id=org.id)
    _, own_secret = keys.create_key(factories.ACTOR, owner, "own key")
    assert code(relay.call(org_secret)) == "ok"
    ban = bans.ban(factories.ACTOR, "org", str(org.id), "chargeback")
    status, body = relay.call(org_secret)
    assert (status, body["error"]["code"]) == (403, "banned") and "account" in body["error"]["message"]
    assert code(relay.call(own_secret)) == "ok"  # the person is not banned, only the organisation
    _, later = keys.create_key(factories.ACTOR, owner, "made after the ban", account_id=org.id)
    assert code(relay.call(later)) == "banned"
    bans.lift(factories.ACTOR, ban)
    assert code(relay.call(org_secret)) == "ok" and code(relay.call(later)) == "ok"
