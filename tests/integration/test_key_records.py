"""Keys at a running relay come from per-key records in Redis behind a bounded cache: a change made
through the services reaches the relay through the change log (or within the cache's TTL without
it), unknown keys are refused without growing memory, a hit costs no Redis round trip and a miss
one, and after Redis loses everything the rebuild from SQL restores keys and balances — at 70,000
keys on PostgreSQL too."""
from __future__ import annotations

import secrets
import threading
import time
from datetime import timedelta

import pytest

from controlplane import bulk_customers, key_rebuild, ledger
from controlplane.models import KeyStatus, utcnow
from controlplane.runtime import runtime
from controlplane.services import bans, users
from controlplane.services import keys as key_service
from controlplane.snapshot import publish
from relay import config_store
from tests import factories
from tests.conftest import clean_tables
from tests.relay_harness import Relay, ingest

ACTOR = factories.ACTOR


def customer(upstream_url: str):
    factories.channel(upstream_url)
    factories.price()
    user = factories.funded_user()
    key, secret = factories.api_key(user)
    return user, key, secret


def code(response) -> str:
    return "ok" if response.status_code == 200 else response.get_json()["error"]["code"]


def eventually(relay: Relay, secret: str, expected: str, timeout: float = 10.0) -> str:
    """What the relay answers once it settles on `expected` (or the last answer at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = code(relay.chat(secret, refresh=False))
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def test_changes_reach_a_following_relay_through_the_change_log(sql_app, upstream):
    user, key, secret = customer(upstream.url)
    relay = Relay(sql_app, key_cache_ttl=3600.0)  # an hour: only the change log can explain what follows
    follower = threading.Thread(target=relay.app.holder.follow, daemon=True)
    follower.start()
    try:
        assert eventually(relay, secret, "ok") == "ok"
        key_service.set_key_status(ACTOR, key, KeyStatus.DISABLED)
        assert eventually(relay, secret, "api_key_disabled") == "api_key_disabled"
        key_service.set_key_status(ACTOR, key, KeyStatus.ENABLED)
        assert eventually(relay, secret, "ok") == "ok"
        ban = bans.ban(ACTOR, "key", str(key.id), "abuse")
        assert eventually(relay, secret, "banned") == "banned"
        bans.lift(ACTOR, ban)
        assert eventually(relay, secret, "ok") == "ok"
        bans.ban(ACTOR, "user", user.email, "chargeback")
        assert eventually(relay, secret, "banned") == "banned"
        bans.unban_user(ACTOR, user)
        users.set_active(ACTOR, user, False)
        assert eventually(relay, secret, "user_disabled") == "user_disabled"
        users.set_active(ACTOR, user, True)
        assert eventually(relay, secret, "ok") == "ok"
        key_service.update_key(ACTOR, key, expires_at=utcnow() + timedelta(seconds=1))
        assert eventually(relay, secret, "api_key_expired") == "api_key_expired"
        fresh, fresh_secret = factories.api_key(user)
        assert code(relay.chat(fresh_secret, refresh=False)) == "ok"  # usable at once: a miss reads its record
        key_service.delete_key(ACTOR, fresh)
        assert eventually(relay, fresh_secret, "invalid_api_key") == "invalid_api_key"
    finally:
        relay.app.holder.following = False


def test_without_the_change_log_a_change_takes_effect_within_the_ttl(app, upstream):
    _, key, secret = customer(upstream.url)
    relay = Relay(app, key_cache_ttl=0.2)
    assert code(relay.chat(secret)) == "ok"
    key_service.set_key_status(ACTOR, key, KeyStatus.DISABLED)  # nobody applies the change log below
    assert eventually(relay, secret, "api_key_disabled") == "api_key_disabled"


def test_unknown_keys_are_refused_and_the_negative_cache_stays_bounded(app, upstream):
    customer(upstream.url)
    relay = Relay(app, key_negative_cache_size=20)
    relay.app.holder.refresh()
    for _ in range(60):
        assert code(relay.chat("sk-sb-" + secrets.token_urlsafe(30), refresh=False)) == "invalid_api_key"
    cache = relay.app.holder.keys
    assert len(cache._missing) == 20 and len(cache) == 0
    bogus = "sk-sb-" + secrets.token_urlsafe(30)
    first = relay.count_round_trips(lambda: relay.chat(bogus, refresh=False))
    again = relay.count_round_trips(lambda: relay.chat(bogus, refresh=False))
    assert first == ["GET"] and again == []  # one round trip per unknown key, then none


def test_a_cache_hit_costs_no_extra_round_trip_and_a_miss_one(app, upstream):
    _, _, secret = customer(upstream.url)
    relay = Relay(app)
    assert code(relay.chat(secret)) == "ok"  # scripts loaded, key cached
    hit = relay.count_round_trips(lambda: relay.chat(secret, refresh=False))
    relay.app.holder.keys.clear()
    miss = relay.count_round_trips(lambda: relay.chat(secret, refresh=False))
    assert "GET" not in hit and miss == ["GET", *hit]


def test_a_redis_flush_then_the_rebuild_restores_keys_and_balances(sql_app, upstream):
    user, _, secret = customer(upstream.url)
    relay = Relay(sql_app)
    assert code(relay.chat(secret)) == "ok"
    ingest()
    balance = ledger.stored_balance(user.account_id)
    runtime().redis.flushdb()
    assert code(relay.chat(secret)) == "invalid_api_key"  # the relay noticed the loss: no stale key
    publish()
    progress = key_rebuild.ensure(runtime().redis)
    assert progress.done and key_rebuild.ensure(runtime().redis) is None
    assert runtime().quota.account(user.account_id) == (balance, 0)
    assert code(relay.chat(secret)) == "ok"


@pytest.mark.timeout(600)
def test_seventy_thousand_keys_on_postgresql_publish_and_survive_a_redis_flush(postgres_app, redis_client, upstream):
    clean_tables(postgres_app)
    with postgres_app.app_context():
        user, _, secret = customer(upstream.url)
        created = bulk_customers.create(runtime().redis, users=2_000, keys=70_000, credit=1_000_000, sample=2, rng_seed=1)
        assert created.keys == 70_000
        publish()  # once every key id in one IN list; now the snapshot never lists keys
        assert len(runtime().redis.get(config_store.SNAPSHOT_KEY)) < 10_000
        relay = Relay(postgres_app)
        assert [code(relay.chat(s)) for s in (secret, *created.sample)] == ["ok"] * 3
        ingest()
        runtime().redis.flushdb()
        publish()
        progress = key_rebuild.rebuild(runtime().redis, batch=5_000)
        assert progress.done and progress.written == 2_001 + 70_001  # accounts, then keys
        assert [code(relay.chat(s)) for s in (secret, *created.sample)] == ["ok"] * 3
        ingest()
        assert runtime().quota.account(user.account_id)[0] == ledger.stored_balance(user.account_id)
    clean_tables(postgres_app)
