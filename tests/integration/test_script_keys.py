"""Every key a per-request script touches is one it was given in KEYS[]: what Redis Cluster routes
by, and what keeps names in relay/redis_keys.py. Watched on a real Redis with MONITOR: each command a
script runs is matched to the script that ran it, and Redis itself says which of its arguments are
keys (COMMAND GETKEYS)."""
from __future__ import annotations

import re
import socket
import threading
import uuid
from urllib.parse import urlsplit

import pytest
import redis as redis_lib

from relay import idempotency
from relay.admission import Gate, MoneyHold, NoRoute
from relay.health import Effect, Health, HealthPolicy, Outcome
from relay.limits import Scope
from relay.quota import Budgets, Quota
from relay.routing import remaining_routes
from relay.selector import Plan, Route
from relay.snapshot import ChannelKeyView, ChannelView, Limits
from tests.fakes.clock import Clock

ACCOUNT, KEY = 1, 7
LIMITED = Limits(rpm=100, tpm=100_000, concurrency=10)
_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_LINE = re.compile(rb"^\+[\d.]+ \[(\d+) ([^\]]+)\] (.*)$")


def _unescape(raw: bytes) -> bytes:
    return re.sub(rb"\\x([0-9a-f]{2})|\\(.)", lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else m.group(2), raw)


class Monitor:
    """Every command the Redis server runs, as MONITOR reports it, until `stop()`."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        self.data = b""
        while b"+OK\r\n" not in self.data:
            self.data += self.sock.recv(65536)
        self.data = self.data.split(b"+OK\r\n", 1)[1]
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    def stop(self, client: redis_lib.Redis) -> list[tuple[int, str, list[bytes]]]:
        marker = f"monitor-end-{uuid.uuid4().hex}".encode()
        client.echo(marker)
        while marker not in self.data:
            self.thread.join(0.05)
        self.sock.close()
        lines = []
        for line in self.data.split(b"\r\n"):
            found = _LINE.match(line)
            if found:
                lines.append((int(found.group(1)), found.group(2).decode(), [_unescape(t) for t in _TOKEN.findall(found.group(3))]))
        return lines


def undeclared(lines: list[tuple[int, str, list[bytes]]], db: int, client: redis_lib.Redis) -> tuple[int, list[str]]:
    """(scripts seen, each key a script's command used that its KEYS did not name)."""
    scripts, declared, found = 0, None, []
    for line_db, who, args in lines:
        if line_db != db:
            continue
        if who != "lua":
            declared = None
            if args and args[0].upper() in (b"EVALSHA", b"EVAL"):
                scripts += 1
                declared = set(args[3:3 + int(args[2])])
            continue
        try:
            keys = [k if isinstance(k, bytes) else k.encode() for k in client.command_getkeys(*args)]
        except redis_lib.ResponseError:
            continue  # a command without keys
        found += [f"{args[0].decode()} {k.decode()}" for k in keys if declared is None or k not in declared]
    return scripts, found


def channel(cid: int, keys: int = 2) -> ChannelView:
    views = tuple(ChannelKeyView(id=cid * 10 + i, secret="sk", since=0.0) for i in range(keys))
    return ChannelView(id=cid, name=f"c{cid}", type="openai", base_url="http://x", models=("m",), keys=views,
                       limits=LIMITED, key_limits=LIMITED)


@pytest.mark.parametrize("split", [False, True], ids=["one-script", "split"])
def test_the_per_request_scripts_touch_only_the_keys_they_are_given(redis_slot, redis_client, split):
    clock = Clock(1_700_000_030.0)
    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    gate = Gate(redis_client, HealthPolicy(failures=1), lease_seconds=600, clock=clock, generation_ttl=60, split=split)
    health = Health(redis_client, HealthPolicy(), clock)
    channels = (channel(1), channel(2))
    plan = Plan(channels, tuple(Route(c, k, "m") for c in channels for k in c.keys))
    scopes = (Scope("k:7", LIMITED), Scope("u:3", LIMITED), Scope("g:default", LIMITED))
    claim = idempotency.claim_of({"HTTP_IDEMPOTENCY_KEY": "retry-1", "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions"}, ACCOUNT, KEY, b"", 60)
    budgets = Budgets(daily=500_000, monthly=900_000, allowance=800_000)

    monitor = Monitor(redis_slot.url)
    try:
        health.record(Outcome(Effect.FAILURE, 2, 20, network=True))  # the network detector's keys
        health.record(Outcome(Effect.DEAD_KEY, 2, 21, kind="auth"))  # the dead mark and the reports stream
        admission = gate.admit(MoneyHold("req_1", ACCOUNT, KEY, 100, 10_000, 2e9, budgets, 3), scopes, plan, claim)
        failed = Outcome(Effect.FAILURE, admission.route.channel.id, admission.route.key.id, kind="transient", message="500")
        route, _, _ = gate.failover(admission, failed, remaining_routes(plan, admission.tried, {admission.route.channel.id}))
        assert route is not None
        ok = Outcome(Effect.OK, route.channel.id, route.key.id)
        assert gate.settle(admission, 40, b"{}", 500, ok, [2, b"{}", 60])[0]
        cooling = Outcome(Effect.COOLDOWN, 1, 11, retry_after=5)
        second = gate.admit(MoneyHold("req_2", ACCOUNT, KEY, 100, 10_000, 2e9, budgets, 3), scopes, plan)
        assert gate.settle(second, 10, b"{}", 5, cooling)[0]
    finally:
        lines = monitor.stop(redis_client)
    scripts, found = undeclared(lines, redis_slot.index, redis_client)
    assert scripts >= 6
    assert found == []


@pytest.mark.parametrize("effect", [Effect.OK, Effect.FAILURE, Effect.COOLDOWN, Effect.DEAD_KEY])
def test_recording_health_alone_touches_only_its_keys(redis_slot, redis_client, effect):
    health = Health(redis_client, HealthPolicy(failures=1), Clock(1_700_000_030.0))
    monitor = Monitor(redis_slot.url)
    try:
        health.record(Outcome(effect, 4, 40, network=True, retry_after=3))
    finally:
        lines = monitor.stop(redis_client)
    scripts, found = undeclared(lines, redis_slot.index, redis_client)
    assert scripts >= 1 and found == []


def test_releasing_an_expired_hold_touches_only_the_keys_it_is_given(redis_slot, redis_client):
    """The sweeper reads the scopes a hold recorded, then hands them to the release script."""
    quota = Quota(redis_client)
    quota.seed_account(ACCOUNT, 1_000_000)
    budgets = Budgets(daily=500_000, allowance=800_000)
    quota.hold("req_gone", ACCOUNT, KEY, 300, 10_000, expires_at=1.0, budgets=budgets, user_id=3)
    monitor = Monitor(redis_slot.url)
    try:
        assert quota.release_expired(now=2.0) == 1
    finally:
        lines = monitor.stop(redis_client)
    scripts, found = undeclared(lines, redis_slot.index, redis_client)
    assert scripts >= 1 and found == []  # more than one when a SCRIPT FLUSH elsewhere made redis-py load it again
    assert quota.account(ACCOUNT) == (1_000_000, 0) and quota.key_spent(ACCOUNT, KEY) == (0, 0) and quota.open_holds() == 0


@pytest.mark.parametrize("split", [False, True], ids=["one-script", "split"])
def test_affinity_and_the_capacity_queue_touch_only_their_keys_and_each_queue_one_slot(redis_slot, redis_client, split):
    """The pin rides in admit and failover; the queue's own scripts (join, leave) and its part of
    admit (the gate, serving the head) use the queue's four keys, all under one hash tag."""
    from redis.crc import key_slot

    from relay.affinity import Affinity
    from relay.capacity_queue import CapacityQueue, Queued, spot_for
    from relay.redis_keys import affinity_key

    clock = Clock(1_700_000_030.0)
    Quota(redis_client).seed_account(ACCOUNT, 1_000_000)
    gate = Gate(redis_client, HealthPolicy(failures=1), lease_seconds=600, clock=clock, split=split)
    queue = CapacityQueue(redis_client.register_script, clock=clock)
    single = ChannelView(id=5, name="c5", type="openai", base_url="http://x", models=("m",), keys=(ChannelKeyView(id=50, secret="sk"),),
                         limits=Limits(concurrency=1))
    plan = Plan((single,), (Route(single, single.keys[0], "m"),))
    pin = Affinity(affinity_key(ACCOUNT, "conversation"), "prefix", 60)
    spot = spot_for("m", plan.channels)
    assert len({key_slot(k.encode()) for k in spot.keys}) == 1

    monitor = Monitor(redis_slot.url)
    try:
        first = gate.admit(MoneyHold("req_q1", ACCOUNT, KEY, 100, None, 2e9), (), plan, affinity=pin, queue=spot)
        with pytest.raises(NoRoute):  # full
            gate.admit(MoneyHold("req_q2", ACCOUNT, KEY, 100, None, 2e9), (), plan, affinity=pin, queue=spot)
        now = clock()
        assert queue._join(keys=list(spot.keys), args=[now, "req_q2", now + 3, 0, ACCOUNT, KEY, 10])[0] == b"in"
        assert queue._join(keys=list(spot.keys), args=[now, "req_q3", now + 3, 0, ACCOUNT, KEY + 1, 10])[0] == b"in"
        with pytest.raises(Queued):  # a newcomer finds others waiting
            gate.admit(MoneyHold("req_q4", ACCOUNT, KEY, 100, None, 2e9), (), plan, queue=spot)
        assert gate.settle(first, 10, b"{}", 5, Outcome(Effect.OK, 5, 50))[0]
        served = gate.admit(MoneyHold("req_q2", ACCOUNT, KEY, 100, None, 2e9), (), plan, affinity=pin, queue=replace_ticket(spot, "req_q2"))
        assert served.pinned == "kept"
        queue._leave(keys=list(spot.keys), args=[clock(), "req_q3"])
        assert gate.settle(served, 10, b"{}", 5, Outcome(Effect.OK, 5, 50))[0]
    finally:
        lines = monitor.stop(redis_client)
    scripts, found = undeclared(lines, redis_slot.index, redis_client)
    assert scripts >= 7 and found == []
    assert redis_client.zcard(spot.keys[0]) == 0 and not redis_client.exists(spot.keys[2])  # the queue emptied, its state gone


def replace_ticket(spot, ticket):
    from dataclasses import replace

    return replace(spot, ticket=ticket)
