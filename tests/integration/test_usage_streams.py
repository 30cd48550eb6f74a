"""Ingestion over several usage streams, as under Redis Cluster (one stream per money bucket): every
event of every stream is written exactly once, what a consumer left pending is read again stream by
stream, an acknowledgement removes an entry from its own stream only, and dead letters go back to
the stream of their account's bucket. First on the tests' one Redis server with three streams of
the tests' own names, then on a real 3-master cluster with the cluster's names, where no command,
transaction or script may span two slots."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest
from redis.crc import key_slot
from sqlalchemy import func, select

from controlplane import backup, dead_letters, ledger
from controlplane.extensions import db
from controlplane.models import LedgerEntry, RequestLog
from relay import redis_keys
from relay.usage import USAGE_GROUP, UsageEvent
from tests import factories
from tests.redis_servers import RedisClusterNodes, wait_until
from workers import usage as usage_worker
from workers.consumer import Consumer

STREAMS = ("sbtest:usage:0", "sbtest:usage:1", "sbtest:usage:2")
GHOST = 9_000_005  # an account id no row has
BATCH = 10  # small, so that a few dozen events take several batches


def _event(rid: str, account_id: int, key_id: int | None, cost: int) -> UsageEvent:
    return UsageEvent(request_id=rid, started_at=1.7e9, finished_at=1.7e9 + 1, endpoint="/v1/chat/completions", status=200,
                      api_key_id=key_id, account_id=account_id, model="gpt-4o-mini", input_tokens=10, output_tokens=5, cost=cost)


def _put(redis, stream: str, *events: UsageEvent) -> None:
    for e in events:
        redis.xadd(stream, {"e": e.encode()})


def _in_sql() -> tuple[int, int]:
    db.session.rollback()
    logs = db.session.scalar(select(func.count()).select_from(RequestLog))
    charges = db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "charge"))
    return logs, charges


def _waiting(redis, streams) -> list[tuple[int, int]]:
    """Per stream: (entries, entries delivered and not acknowledged)."""
    return [(redis.xlen(s), redis.xpending(s, USAGE_GROUP)["pending"]) for s in streams]


def _funded():
    user = factories.funded_user("1")
    key, _ = factories.api_key(user)
    return user, key


@pytest.fixture
def streams(redis_client):
    yield STREAMS
    redis_client.delete(*STREAMS)


# --- three streams on one server --------------------------------------------------------------------

def test_every_event_of_every_stream_is_written_once(sql_app, redis_client, streams):
    user, key = _funded()
    for n, stream in enumerate(streams):
        _put(redis_client, stream, *[_event(f"req_s{n}_{i}", user.account_id, key.id, 100) for i in range(12 + n)])
    _put(redis_client, streams[1], _event("req_s0_3", user.account_id, key.id, 100))  # a replay, in another stream
    totals = Consumer(redis_client, BATCH, streams=streams).drain()
    assert totals.written == 12 + 13 + 14 and totals.batches >= 4
    assert _in_sql() == (39, 39) and _waiting(redis_client, streams) == [(0, 0)] * 3
    assert ledger.sum_of_entries(user.account_id) == ledger.stored_balance(user.account_id) == 1_000_000 - 3_900
    assert Consumer(redis_client, BATCH, streams=streams).drain().written == 0


def test_a_stream_with_a_backlog_does_not_starve_the_others(app, redis_client, streams):
    user, key = _funded()
    _put(redis_client, streams[0], *[_event(f"req_busy{i}", user.account_id, key.id, 1) for i in range(5 * BATCH)])
    _put(redis_client, streams[2], _event("req_quiet", user.account_id, key.id, 1))
    assert Consumer(redis_client, BATCH, streams=streams).drain().written == 5 * BATCH + 1
    written = list(db.session.scalars(select(RequestLog.request_id).order_by(RequestLog.id)))
    assert written.index("req_quiet") < 2 * BATCH  # in the second batch at the latest, not after the busy stream's backlog


def test_what_a_consumer_was_given_and_left_is_read_again_by_its_name_stream_by_stream(app, redis_client, streams):
    user, key = _funded()
    usage_worker.ensure_group(redis_client, streams)
    for n, stream in enumerate(streams):
        _put(redis_client, stream, *[_event(f"req_left{n}_{i}", user.account_id, key.id, 10) for i in range(4)])
        redis_client.xreadgroup(USAGE_GROUP, "elsewhere:1", {stream: ">"}, count=3)  # read, then it stopped
    # Another host's consumer: not taken over before a minute has passed; the rest is read.
    assert Consumer(redis_client, BATCH, name="other:2", streams=streams).drain().written == 3
    assert _waiting(redis_client, streams) == [(3, 3)] * 3
    # The same name again: its own entries first, in each stream.
    assert Consumer(redis_client, BATCH, name="elsewhere:1", streams=streams).drain().written == 9
    assert _in_sql() == (12, 12) and _waiting(redis_client, streams) == [(0, 0)] * 3


def test_the_entries_of_a_gone_consumer_of_this_host_are_taken_over_in_every_stream(app, redis_client, streams):
    user, key = _funded()
    gone = subprocess.Popen(["true"])
    gone.wait()
    name = f"{socket.gethostname()}:{gone.pid}"
    usage_worker.ensure_group(redis_client, streams)
    for n, stream in enumerate(streams):
        _put(redis_client, stream, *[_event(f"req_gone{n}_{i}", user.account_id, key.id, 10) for i in range(2)])
        redis_client.xreadgroup(USAGE_GROUP, name, {stream: ">"})
    successor = Consumer(redis_client, BATCH, name="successor:1", streams=streams)
    assert successor.drain().written == 6
    assert _waiting(redis_client, streams) == [(0, 0)] * 3
    assert all(redis_client.xinfo_consumers(s, USAGE_GROUP)[0]["name"] == b"successor:1" for s in streams)  # the gone one was removed


def test_an_acknowledgement_removes_the_entry_from_its_own_stream_only(app, redis_client, streams):
    usage_worker.ensure_group(redis_client, streams)
    for stream in streams:  # the same id in every stream: ids are unique within a stream only
        redis_client.xadd(stream, {"e": b"{}"}, id="5-1")
        redis_client.xreadgroup(USAGE_GROUP, "c", {stream: ">"})
    done = usage_worker.Pending(b"5-1", {b"e": b"{}"}, 0, streams[1])
    dead = usage_worker.Pending(b"5-1", {b"e": b"{}"}, 0, streams[2])
    usage_worker.acknowledge(redis_client, usage_worker.Outcome(done=[done], dead=[(dead, "refused")]))
    assert _waiting(redis_client, streams) == [(1, 1), (0, 0), (0, 0)]
    [letter] = dead_letters.newest(redis_client)[0]
    assert letter.source_id == "5-1" and letter.error == "refused"


def test_poison_events_of_several_streams_are_dead_lettered_and_the_rest_written(sql_app, redis_client, streams):
    user, key = _funded()
    for n, stream in enumerate(streams):
        _put(redis_client, stream, _event(f"req_good{n}", user.account_id, key.id, 100), _event(f"req_poison{n}", GHOST, None, 5))
    redis_client.xadd(streams[1], {"e": b"{not json"})
    totals = Consumer(redis_client, BATCH, streams=streams).drain()
    assert (totals.written, totals.dead_lettered) == (3, 4)
    assert _in_sql() == (3, 3) and _waiting(redis_client, streams) == [(0, 0)] * 3
    letters = {(d.event.request_id if d.event else None) for d in dead_letters.newest(redis_client)[0]}
    assert letters == {"req_poison0", "req_poison1", "req_poison2", None}


class _CountingReads:
    """The Redis client, with its XREADGROUP calls counted."""

    def __init__(self, redis):
        self.redis, self.reads = redis, 0

    def xreadgroup(self, *args, **kwargs):
        self.reads += 1
        return self.redis.xreadgroup(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.redis, name)


def test_an_idle_consumer_of_several_streams_waits_without_spinning_and_reads_any_stream_at_once(app, redis_client, streams):
    user, key = _funded()
    counted = _CountingReads(redis_client)
    consumer = Consumer(counted, BATCH, streams=streams)

    def run():
        with app.app_context():
            consumer.run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: counted.reads > 0, 5.0, 0.02, "the consumer's first read")
        before = counted.reads
        time.sleep(1.0)
        # Each pause: a read of every stream without waiting, then a wait of POLL_MS on one.
        assert 0 < counted.reads - before <= 60
        for n, stream in enumerate(streams):
            # Read while the consumer idles on the streams: none is left waiting behind a block on another.
            _put(redis_client, stream, _event(f"req_idle{n}", user.account_id, key.id, 1))
            wait_until(lambda s=stream: redis_client.xlen(s) == 0, 2.0, 0.02, f"{stream} to be read")
        assert _in_sql() == (3, 3)
    finally:
        consumer.stop()
        thread.join(5)
    assert not thread.is_alive() and consumer.totals.written == 3
    assert all(redis_client.xinfo_consumers(s, USAGE_GROUP) == [] for s in streams)  # it left every group


# --- a real Redis Cluster -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("usage-cluster"))
    yield nodes
    nodes.stop()


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    """The cluster's client and three buckets' streams, named as a cluster deployment names them."""
    monkeypatch.setattr(redis_keys, "CLUSTER", True)
    monkeypatch.setattr(redis_keys, "SPREAD", True)
    monkeypatch.setattr(redis_keys, "MONEY_BUCKETS", 3)
    client = cluster.client()
    for node in cluster.nodes:
        node.client().flushall()
    streams = tuple(redis_keys.usage_stream(b) for b in range(3))
    assert len({key_slot(s.encode()) for s in (*streams, dead_letters.DEAD_STREAM)}) == 4
    yield client, streams
    client.close()


def test_on_a_cluster_each_stream_is_read_and_acknowledged_in_its_own_slot(app, redis_client, on_cluster):
    client, streams = on_cluster
    user, key = _funded()
    for n, stream in enumerate(streams):
        _put(client, stream, *[_event(f"req_c{n}_{i}", user.account_id, key.id, 10) for i in range(7)])
    _put(client, redis_keys.usage_stream(redis_keys.money_bucket(GHOST)), _event("req_c_poison", GHOST, None, 5))
    totals = Consumer(client, BATCH, streams=streams).drain()
    assert (totals.written, totals.dead_lettered) == (21, 1)
    assert _in_sql() == (21, 21) and _waiting(client, streams) == [(0, 0)] * 3
    assert dead_letters.count(client) == 1


def test_on_a_cluster_a_retried_dead_letter_goes_back_to_its_accounts_bucket(app, redis_client, on_cluster):
    client, streams = on_cluster
    home = streams[redis_keys.money_bucket(GHOST)]
    _put(client, home, _event("req_c_retry", GHOST, None, 5))
    assert Consumer(client, BATCH, streams=streams).drain().dead_lettered == 1
    letter = dead_letters.newest(client)[0][0]
    assert dead_letters.requeue(client, letter.id)
    assert not dead_letters.requeue(client, letter.id)  # gone from the dead letters
    assert dead_letters.count(client) == 0 and [client.xlen(s) for s in streams] == [int(s == home) for s in streams]
    assert Consumer(client, BATCH, streams=streams).drain().dead_lettered == 1
    assert [(d.event.request_id, d.attempts) for d in dead_letters.newest(client)[0]] == [("req_c_retry", 2)]


def test_on_a_cluster_a_backup_has_an_event_caught_between_two_streams_once(app, redis_client, on_cluster, monkeypatch, tmp_path):
    client, streams = on_cluster
    monkeypatch.setattr(backup, "USAGE_STREAMS", streams)
    moving = {"e": _event("req_moving", GHOST, None, 5).encode()}
    client.xadd(streams[1], moving, id="7-0")
    client.xadd(streams[1], {"e": b"{}"}, id="9-0")
    # Dead-lettered and not yet deleted from its stream (or retried and not yet deleted from here).
    client.xadd(dead_letters.DEAD_STREAM, dead_letters.entry_fields(moving, "refused", 1, "7-0"))
    client.xadd(dead_letters.DEAD_STREAM, dead_letters.entry_fields({"e": b"{not json"}, "refused", 1, "3-0"))
    counts = backup.dump_streams(client, tmp_path / "streams.jsonl")
    assert counts == {streams[0]: 0, streams[1]: 2, streams[2]: 0, dead_letters.DEAD_STREAM: 1}
    lines = [json.loads(line) for line in (tmp_path / "streams.jsonl").read_text().splitlines()]
    assert [(line["stream"], line["id"]) for line in lines][:2] == [(streams[1], "7-0"), (streams[1], "9-0")]


def test_a_backup_of_another_layouts_streams_is_refused_before_anything_is_restored():
    other = {"streams": {"sb:{m3}:usage": 2, "sb:{m4}:usage": 0, dead_letters.DEAD_STREAM: 0}}
    with pytest.raises(backup.BackupError, match=r"sb:\{m3\}:usage"):
        backup.check_layout(other)
    backup.check_layout({"streams": {**{s: 1 for s in backup.STREAMS}, "sb:{m4}:usage": 0}})  # empty ones do not matter
