"""Active health on both SQL back ends: probes against fake upstreams disable and re-enable channels
and keys by compare-and-set, with events, audit and notifications; an operator's decision stands."""
from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest
from sqlalchemy import select

from controlplane import snapshot as control_snapshot
from controlplane.extensions import db
from controlplane.models import AuditEntry, Channel, ChannelEvent, ChannelKey, ChannelStatus
from controlplane.notify import signature
from controlplane.runtime import runtime
from controlplane.services import channels as channel_service
from controlplane.services.channel_health import apply_probe, apply_report
from controlplane.services.probes import ProbeResult, Verdict
from controlplane.settings import ProbeSettings
from relay import config_store
from relay.adapters import Operation
from relay.health import Effect, Health, Outcome
from tests import factories
from tests.fakes.http import FakeServer, Handler
from tests.fakes.openai_server import Behaviour, FakeOpenAI, invalid_key
from tests.fakes.smtp_server import FakeSMTP
from workers import health as health_worker
from workers.locks import Lock

PROBES = ProbeSettings(disable_after=3, enable_after=2, timeout_seconds=2.0, lock_seconds=30, parallel=4)


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def probes(sql_app, fake):
    """Short probe settings for this test (the app's settings are swapped back after)."""
    fake.reset_log()
    rt = runtime()
    original = rt.settings
    rt.settings = replace(original, probe=PROBES)
    yield rt.settings
    rt.settings = original


def status(row_type, row_id: int) -> str:
    db.session.expire_all()
    return db.session.get(row_type, row_id).status


def events(channel_id: int) -> list[tuple]:
    rows = db.session.scalars(select(ChannelEvent).where(ChannelEvent.channel_id == channel_id).order_by(ChannelEvent.id))
    return [(e.channel_key_id, e.from_status, e.to_status, e.actor) for e in rows]


def published_status(channel_id: int) -> str:
    snap = config_store.load(runtime().redis, runtime().cipher.decrypt)
    return next(c.status for c in snap.channels if c.id == channel_id)


def test_three_failing_probes_auto_disable_and_two_passing_re_enable(probes, fake):
    ch = factories.channel(fake.url)
    fake.default = Behaviour(status=503)
    for _ in range(2):
        health_worker.probe_channels([ch.id])
    assert status(Channel, ch.id) == "enabled" and db.session.get(Channel, ch.id).probe_failures == 2
    run = health_worker.probe_channels([ch.id])
    assert run.failing == [ch.id] and status(Channel, ch.id) == "auto_disabled"
    row = db.session.get(Channel, ch.id)
    assert row.status_reason.startswith("probe failed 3 times in a row — upstream said: fake failure 503")
    assert published_status(ch.id) == "auto_disabled"
    audit = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "channel.status", AuditEntry.actor == "health")).all()
    assert len(audit) == 1 and audit[0].after["status"] == "auto_disabled"
    fake.default = Behaviour()
    health_worker.probe_channels()  # an auto-disabled channel is still probed
    assert status(Channel, ch.id) == "auto_disabled"
    health_worker.probe_channels()
    assert status(Channel, ch.id) == "enabled" and published_status(ch.id) == "enabled"
    assert events(ch.id) == [(None, "enabled", "auto_disabled", "health"), (None, "auto_disabled", "enabled", "health")]
    probe = fake.chat_requests()[-1]["body"]
    assert probe["max_tokens"] == 1 and probe["model"] == "gpt-4o-mini"


def test_an_operator_disabled_channel_stays_disabled_while_probes_pass(probes, fake):
    ch = factories.channel(fake.url)
    channel_service.set_status(factories.ACTOR, ch, ChannelStatus.DISABLED, reason="maintenance")
    for _ in range(3):
        health_worker.probe_channels()
        health_worker.probe_channels([ch.id])
    assert status(Channel, ch.id) == "disabled" and fake.chat_requests() == []
    # Even a run that had already probed it when the operator acted changes nothing.
    passed = [ProbeResult(ch.id, ch.keys[0].id, Verdict.PASS, 10, 200)]
    assert [apply_probe(ch.id, passed, PROBES) for _ in range(3)] == [[], [], []]
    assert status(Channel, ch.id) == "disabled"


def test_an_operator_disabled_key_is_not_re_enabled_by_passing_probes(probes, fake):
    ch = factories.channel(fake.url, keys_=("sk-a", "sk-b"))
    key = db.session.get(ChannelKey, ch.keys[1].id)
    key.status = "disabled"  # as the console's key action does
    db.session.commit()
    for _ in range(3):
        health_worker.probe_channels([ch.id])
    assert status(ChannelKey, key.id) == "disabled"
    assert fake.keys_seen() == ["sk-a"] * 3  # never probed


def test_a_dead_key_of_a_multi_key_channel_is_disabled_alone_and_re_enabled_when_fixed(probes, fake):
    ch = factories.channel(fake.url, keys_=("sk-good", "sk-dead"))
    dead_id = ch.keys[1].id
    fake.by_key["sk-dead"] = invalid_key()
    for _ in range(3):
        health_worker.probe_channels([ch.id])
    assert status(ChannelKey, dead_id) == "auto_disabled" and status(Channel, ch.id) == "enabled"
    assert "Incorrect API key provided" in db.session.get(ChannelKey, dead_id).status_reason
    Health(runtime().redis).record(Outcome(Effect.FAILURE, ch.id, dead_id))  # what relays knew of it
    fake.by_key.clear()
    for _ in range(2):
        health_worker.probe_channels([ch.id])
    assert status(ChannelKey, dead_id) == "enabled"
    assert Health(runtime().redis).key(ch.id, dead_id).failures == 0  # re-enabled with a clean slate
    assert [e[:3] for e in events(ch.id)] == [(dead_id, "enabled", "auto_disabled"), (dead_id, "auto_disabled", "enabled")]


def test_a_key_answering_5xx_while_its_sibling_passes_is_disabled_alone(probes, fake):
    ch = factories.channel(fake.url, keys_=("sk-broken", "sk-fine"))
    broken_id, fine_id = ch.keys[0].id, ch.keys[1].id
    fake.by_key["sk-broken"] = Behaviour(status=502)  # listed first: its failure must not end the run
    for n in range(1, 3):
        run = health_worker.probe_channels([ch.id])
        assert status(ChannelKey, broken_id) == "enabled" and db.session.get(ChannelKey, broken_id).probe_failures == n
    assert run.failing == [ch.id]  # reported as failing before it is disabled
    health_worker.probe_channels([ch.id])
    assert status(ChannelKey, broken_id) == "auto_disabled"
    assert status(ChannelKey, fine_id) == "enabled" and status(Channel, ch.id) == "enabled"
    assert db.session.get(Channel, ch.id).probe_failures == 0  # the channel served every run
    assert "fake failure 502" in db.session.get(ChannelKey, broken_id).status_reason
    assert fake.keys_seen() == ["sk-broken", "sk-fine"] * 3  # every key, every run
    snap = config_store.load(runtime().redis, runtime().cipher.decrypt)
    assert [k.id for c in snap.channels if c.id == ch.id for k in c.keys if k.status == "enabled"] == [fine_id]
    fake.by_key.clear()  # the key recovers: re-enabled by the same rule as any auto-disabled key
    for _ in range(2):
        health_worker.probe_channels([ch.id])
    assert status(ChannelKey, broken_id) == "enabled"
    assert [e[:3] for e in events(ch.id)] == [(broken_id, "enabled", "auto_disabled"), (broken_id, "auto_disabled", "enabled")]


def test_a_5xx_from_every_key_is_the_channels_failure_not_the_keys(probes, fake):
    ch = factories.channel(fake.url, keys_=("sk-p", "sk-q"))
    fake.default = Behaviour(status=500)
    for _ in range(3):
        health_worker.probe_channels([ch.id])
    assert status(Channel, ch.id) == "auto_disabled"
    assert {status(ChannelKey, k.id) for k in ch.keys} == {"enabled"}
    assert {db.session.get(ChannelKey, k.id).probe_failures for k in ch.keys} == {0}


def test_a_channel_refusing_every_key_is_disabled_as_a_whole(probes, fake):
    ch = factories.channel(fake.url, keys_=("sk-x", "sk-y"))
    fake.by_key.update({"sk-x": invalid_key(), "sk-y": invalid_key()})
    for _ in range(3):
        health_worker.probe_channels([ch.id])
    assert status(Channel, ch.id) == "auto_disabled"
    assert {status(ChannelKey, k.id) for k in ch.keys} == {"auto_disabled"}


def test_an_unreachable_channel_is_probed_with_one_key_not_all(probes, fake):
    ch = factories.channel("http://127.0.0.1:9/v1", keys_=("sk-1", "sk-2", "sk-3"))
    run = health_worker.probe_channels([ch.id])
    assert [r["kind"] for r in run.results] == ["connect"]
    assert db.session.get(Channel, ch.id).probe_failures == 1
    assert {db.session.get(ChannelKey, k.id).probe_failures for k in ch.keys} == {0}  # not the keys' fault


def test_a_channel_that_cannot_be_probed_is_reported_never_disabled(probes, fake):
    ch = factories.channel(fake.url, config={"probe_endpoint": "images"})
    for _ in range(4):
        run = health_worker.probe_channels([ch.id])
    assert run.unprobeable == [ch.id] and status(Channel, ch.id) == "enabled"
    assert db.session.get(Channel, ch.id).probe_message == "cannot be probed: channel type 'openai' cannot be probed with images"
    assert fake.requests == []


@pytest.mark.skipif("embeddings" not in Operation._value2member_map_, reason="no embeddings operation in the adapters yet")
def test_an_embeddings_only_channel_is_probed_with_embeddings(probes, fake):
    ch = factories.channel(fake.url, models=("text-embedding-3-small",))
    run = health_worker.probe_channels([ch.id])
    assert run.results[0]["operation"] == "embeddings" and run.results[0]["ok"]
    assert fake.requests[-1]["path"].endswith("/embeddings")


def test_a_channel_another_worker_holds_is_left_alone(probes, fake):
    ch = factories.channel(fake.url)
    other = Lock(runtime().redis, f"sb:lock:probe:{ch.id}", 30)
    assert other.acquire()
    run = health_worker.probe_channels([ch.id])
    assert run.busy == [ch.id] and fake.requests == []
    other.release()


def test_two_workers_at_once_probe_each_channel_once(probes, fake, sql_app):
    channels = [factories.channel(fake.url).id for _ in range(3)]
    fake.default = Behaviour(first_byte_delay=0.3)
    runs = []

    def worker():
        with sql_app.app_context():
            runtime().settings = replace(runtime().settings, probe=PROBES)
            runs.append(health_worker.probe_channels(channels))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.chat_requests()) == 3
    assert sorted(runs[0].probed + runs[1].probed) == sorted(channels)
    assert sorted(runs[0].busy + runs[1].busy) == sorted(channels)


def test_a_stale_dead_key_report_does_not_undo_an_operators_re_enable(probes, fake):
    ch = factories.channel(fake.url, keys_=("sk-a", "sk-b"))
    key = db.session.get(ChannelKey, ch.keys[0].id)
    reported_at = key.status_since.timestamp() - 5  # the relay saw it dead before the operator's change
    assert apply_report(ch.id, key.id, "auth", "Incorrect API key", reported_at) == []
    assert status(ChannelKey, key.id) == "enabled"


class _Receiver(Handler):
    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.fake.record(path=self.path, headers=dict(self.headers), body=self.rfile.read(length))
        self.send_json(500 if self.fake.failing else 204, b"")


@pytest.fixture
def receiver():
    server = type("Receiver", (FakeServer,), {"handler_class": _Receiver, "failing": False})()
    yield server
    server.close()


def test_operators_are_told_by_email_and_signed_webhook_once(probes, fake, receiver):
    smtp = FakeSMTP()
    try:
        rt = runtime()
        rt.settings = replace(rt.settings, alert_emails=("ops@example.com",), alert_webhook_url=receiver.origin + "/hook",
                              webhook_secret="s3cret", smtp=replace(rt.settings.smtp, host="127.0.0.1", port=smtp.port, starttls=False))
        ch = factories.channel(fake.url, name="primary-openai")
        fake.default = Behaviour(status=500)
        receiver.failing = True
        for _ in range(3):
            health_worker.probe_channels([ch.id])
        event = db.session.scalar(select(ChannelEvent).where(ChannelEvent.channel_id == ch.id))
        assert event.notified_at is None  # the webhook failed: it stays in the outbox
        receiver.failing = False
        assert health_worker.notify() == 1
        assert health_worker.notify() == 0
        hooks = [r for r in receiver.requests]
        sent = json.loads(hooks[-1]["body"])
        stamp = hooks[-1]["headers"]["X-Switchboard-Timestamp"]
        assert hooks[-1]["headers"]["X-Switchboard-Signature"] == "sha256=" + signature("s3cret", stamp, hooks[-1]["body"])
        assert sent["event"] == "channel.status_changed"
        assert (sent["data"]["channel"], sent["data"]["to"], sent["data"]["id"]) == ("primary-openai", "auto_disabled", event.id)
        mail = smtp.messages[-1]
        assert mail["To"] == "ops@example.com" and "primary-openai: enabled → auto_disabled" in mail.get_payload(decode=True).decode()
    finally:
        smtp.close()


def test_a_snapshot_republish_keeps_the_probe_state_out_of_the_relay_contract(probes, fake):
    ch = factories.channel(fake.url)
    health_worker.probe_channels([ch.id])
    payload = control_snapshot.build(1).to_payload(lambda s: s)
    assert "probe_failures" not in json.dumps(payload)


def test_an_operator_enabling_a_key_or_channel_clears_the_relays_marks(probes):
    """Passive ejections and dead-key marks live in Redis; an operator's enable starts afresh."""
    from controlplane.models import ChannelStatus
    from controlplane.runtime import runtime
    from controlplane.services import channel_keys, channels as channel_service
    from tests import factories

    channel = factories.channel("http://127.0.0.1:9/v1", keys_=("sk-a-1111", "sk-b-2222"))
    key = channel.keys[0]
    redis = runtime().redis
    redis.set(f"sb:hdead:{key.id}", 1)
    redis.hset(f"sb:hk:{key.id}", "f", 5)
    redis.hset(f"sb:hc:{channel.id}", "f", 5)
    channel_keys.set_key_status(factories.ACTOR, key, ChannelStatus.DISABLED, "rotating")
    channel_keys.set_key_status(factories.ACTOR, key, ChannelStatus.ENABLED)
    assert not redis.exists(f"sb:hdead:{key.id}") and not redis.exists(f"sb:hk:{key.id}")
    channel_service.set_status(factories.ACTOR, channel, ChannelStatus.DISABLED, "maintenance")
    channel_service.set_status(factories.ACTOR, channel, ChannelStatus.ENABLED)
    assert not redis.exists(f"sb:hc:{channel.id}")
