"""The cron entry point as cron runs it, killed mid-probe: nothing half-applied, the channel left to
no one until the dead worker's lock lapses, then the next run finishes the job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Channel, ChannelEvent
from controlplane.runtime import runtime
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.gateway import ROOT
from workers.health import RUN_LOCK

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def script_env(app) -> dict:
    settings = app.config["SWITCHBOARD"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url, SWITCHBOARD_ENCRYPTION_KEY=settings.encryption_key,
               SWITCHBOARD_SECRET_KEY="probe-test", SWITCHBOARD_INSTANCE=str(settings.instance_dir),
               # the killed run's claims must outlive the start of the next run (a Python process,
               # seconds on a busy machine) and then lapse within the test
               SWITCHBOARD_PROBE_LOCK_SECONDS="10", SWITCHBOARD_PROBE_TIMEOUT_SECONDS="30",
               SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8")  # the fake upstream listens on loopback
    return env


def health_check(app, channel_id: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.health_check", "--channel", str(channel_id), "--json"],
                          cwd=ROOT, env=script_env(app), capture_output=True, text=True, timeout=60)


def test_a_probe_run_killed_midway_leaves_nothing_half_applied(app, fake):
    ch = factories.channel(fake.url)
    row = db.session.get(Channel, ch.id)
    row.probe_failures = 2  # one more failing probe disables it
    db.session.commit()
    fake.default = Behaviour(status=500, first_byte_delay=30)
    worker = subprocess.Popen([sys.executable, "-m", "scripts.health_check", "--channel", str(ch.id)], cwd=ROOT, env=script_env(app),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not fake.chat_requests() and time.time() < deadline:
        time.sleep(0.05)
    assert fake.chat_requests(), f"the probe never started: {worker.poll()} {worker.stderr.read() if worker.poll() is not None else ''}"
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    db.session.expire_all()
    row = db.session.get(Channel, ch.id)
    assert (row.status, row.probe_failures, row.probed_at) == ("enabled", 2, None)
    assert db.session.scalars(select(ChannelEvent)).all() == []
    locks = (RUN_LOCK, f"sb:lock:probe:{ch.id}")
    assert runtime().redis.exists(*locks) == 2  # the dead worker's claims, until their lease lapses

    busy = health_check(app, ch.id)  # cron's next run while the claims live: it steps aside
    assert busy.returncode == 75 and "another probe run" in busy.stderr
    while runtime().redis.exists(*locks):
        time.sleep(0.1)
    fake.default = Behaviour(status=500)
    done = health_check(app, ch.id)
    assert done.returncode == 3 and json.loads(done.stdout)["failing"] == [ch.id]
    db.session.expire_all()
    assert db.session.get(Channel, ch.id).status == "auto_disabled"
    assert len(db.session.scalars(select(ChannelEvent)).all()) == 1


def test_the_cron_script_says_when_another_run_holds_the_lock(app, fake):
    from workers.locks import Lock

    ch = factories.channel(fake.url)
    with Lock(runtime().redis, RUN_LOCK, 30) as held:
        assert held.acquire()
        result = health_check(app, ch.id)
    assert result.returncode == 75 and "another probe run" in result.stderr
    assert fake.requests == []
    assert health_check(app, ch.id).returncode == 0


def test_the_cron_script_applies_dead_key_reports(app, fake):
    from controlplane.models import ChannelKey
    from relay.health import Effect, Health, Outcome

    ch = factories.channel(fake.url, keys_=("sk-a", "sk-b"))
    key_id = ch.keys[0].id
    Health(runtime().redis).record(Outcome(Effect.DEAD_KEY, ch.id, key_id, kind="auth", message="Incorrect API key provided"))
    done = subprocess.run([sys.executable, "-m", "scripts.apply_health_reports"], cwd=ROOT, env=script_env(app),
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "1 state change(s)")
    db.session.expire_all()
    assert db.session.get(ChannelKey, key_id).status == "auto_disabled"
