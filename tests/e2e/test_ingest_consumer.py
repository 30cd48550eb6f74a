"""`switchboard ingest` as a real process on each SQL back end: it drains the usage stream into SQL,
dead-letters a poison event, stops on SIGTERM after acknowledging the batch in hand, and a consumer
that replaces a killed one writes what that one left, each event exactly once."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from controlplane import dead_letters, ledger
from controlplane.extensions import db
from controlplane.models import LedgerEntry, RequestLog
from relay.usage import USAGE_GROUP, USAGE_STREAMS, UsageEvent
from tests import factories
from tests.gateway import ROOT

pytestmark = pytest.mark.e2e
GHOST = 9_000_002  # an account id no row has
BATCH = 100  # events per batch for these consumers: a few batches are enough to stop or die between


class Ingest:
    """One `switchboard ingest` process on the test's database and Redis, its output collected."""

    def __init__(self, app, instance, *args: str):
        settings = app.extensions["switchboard"].settings
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url, SWITCHBOARD_INSTANCE=str(instance),
                   SWITCHBOARD_SECRET_KEY=settings.secret_key, SWITCHBOARD_ENCRYPTION_KEY=settings.encryption_key,
                   SWITCHBOARD_LOG_LEVEL="INFO", SWITCHBOARD_USAGE_BATCH=str(BATCH), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "controlplane", "ingest", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        threading.Thread(target=lambda: self.output.extend(line.rstrip() for line in self.proc.stdout), daemon=True).start()
        self.name = f"{socket.gethostname()}:{self.proc.pid}"

    def wait_reading(self, redis, timeout: float = 60) -> None:
        """Until it waits in a blocking XREADGROUP on the test's Redis database."""
        index = redis.connection_pool.connection_kwargs.get("db", 0)

        def blocked():
            return any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") and int(c.get("db", -1)) == index
                       for c in redis.client_list())

        assert _until(blocked, timeout), "\n".join(self.output)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _until(condition, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _event(rid: str, account_id: int, key_id: int | None, cost: int) -> UsageEvent:
    return UsageEvent(request_id=rid, started_at=1.7e9, finished_at=1.7e9 + 1, endpoint="/v1/chat/completions", status=200,
                      api_key_id=key_id, account_id=account_id, model="gpt-4o-mini", input_tokens=10, output_tokens=5, cost=cost)


def _put(redis, events) -> None:
    pipe = redis.pipeline(transaction=False)
    for e in events:
        pipe.xadd(USAGE_STREAMS[0], {"e": e.encode()})
    pipe.execute()


def _in_sql() -> tuple[int, int]:
    """(request logs, charge entries) as another process committed them."""
    db.session.rollback()
    logs = db.session.scalar(select(func.count()).select_from(RequestLog))
    charges = db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "charge"))
    return logs, charges


def _funded():
    user = factories.funded_user("100")
    key, _ = factories.api_key(user)
    return user, key


@pytest.fixture
def consumers(sql_app, tmp_path):
    started: list[Ingest] = []

    def start(*args: str) -> Ingest:
        started.append(Ingest(sql_app, tmp_path, *args))
        return started[-1]

    yield start
    for consumer in started:
        consumer.stop()


def test_the_consumer_drains_the_stream_dead_letters_a_poison_event_and_stops_on_sigterm(sql_app, redis_client, consumers):
    user, key = _funded()
    consumer = consumers()
    consumer.wait_reading(redis_client)
    good = [_event(f"req_live{i}", user.account_id, key.id, 100) for i in range(20)]
    _put(redis_client, [*good[:10], _event("req_poison", GHOST, None, 50), good[3], *good[10:]])
    assert _until(lambda: redis_client.xlen(USAGE_STREAMS[0]) == 0), "\n".join(consumer.output)
    assert _in_sql() == (20, 20)
    assert ledger.sum_of_entries(user.account_id) == ledger.stored_balance(user.account_id) == 100_000_000 - 2_000
    [letter] = dead_letters.newest(redis_client)[0]
    assert letter.event.request_id == "req_poison" and "foreign key" in letter.error.lower()
    consumer.signal(signal.SIGTERM)
    assert consumer.proc.wait(timeout=15) == 0, "\n".join(consumer.output)
    assert any("stopped: 20 written" in line and "1 dead-lettered" in line for line in consumer.output), consumer.output
    assert redis_client.xinfo_consumers(USAGE_STREAMS[0], USAGE_GROUP) == []  # it left the group with nothing pending


def test_sigterm_mid_batch_acknowledges_what_was_written_and_the_next_consumer_writes_the_rest_once(sql_app, redis_client, consumers):
    user, key = _funded()
    consumer = consumers()
    consumer.wait_reading(redis_client)
    consumer.signal(signal.SIGSTOP)  # events pile up; its blocked read takes the first batch of them
    _put(redis_client, [_event(f"req_term{i}", user.account_id, key.id, 7) for i in range(250)])
    consumer.signal(signal.SIGCONT)
    consumer.signal(signal.SIGTERM)
    assert consumer.proc.wait(timeout=30) == 0, "\n".join(consumer.output)
    logs, charges = _in_sql()
    assert 0 < logs < 250 and charges == logs  # it finished the batch it held, and no more
    assert redis_client.xlen(USAGE_STREAMS[0]) == 250 - logs  # what it wrote left the stream; nothing is pending
    assert redis_client.xpending(USAGE_STREAMS[0], USAGE_GROUP)["pending"] == 0
    drained = consumers("--drain")
    assert drained.proc.wait(timeout=60) == 0, "\n".join(drained.output)
    assert _in_sql() == (250, 250) and redis_client.xlen(USAGE_STREAMS[0]) == 0
    assert ledger.sum_of_entries(user.account_id) == ledger.stored_balance(user.account_id) == 100_000_000 - 7 * 250


@pytest.mark.parametrize("sql_app", ["sqlite"], indirect=True)  # takeover is Redis's part: one back end is enough
def test_a_consumer_killed_mid_batch_is_taken_over_at_once_and_nothing_is_written_twice(sql_app, redis_client, consumers):
    user, key = _funded()
    killed = consumers()
    killed.wait_reading(redis_client)
    killed.signal(signal.SIGSTOP)
    _put(redis_client, [_event(f"req_kill{i}", user.account_id, key.id, 3) for i in range(150)])
    killed.signal(signal.SIGCONT)
    time.sleep(0.3)  # somewhere in its first batch: read, maybe written, not acknowledged
    killed.signal(signal.SIGKILL)
    killed.proc.wait(timeout=10)
    successor = consumers()
    # Its entries are taken over now, not after the minute an unknown consumer's would wait.
    assert _until(lambda: redis_client.xlen(USAGE_STREAMS[0]) == 0, 60), "\n".join(successor.output)
    assert _in_sql() == (150, 150)
    assert ledger.sum_of_entries(user.account_id) == ledger.stored_balance(user.account_id) == 100_000_000 - 3 * 150
    assert [c["name"].decode() for c in redis_client.xinfo_consumers(USAGE_STREAMS[0], USAGE_GROUP)] == [successor.name]
