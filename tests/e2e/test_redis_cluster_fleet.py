"""A fleet on a real 3-master Redis Cluster and PostgreSQL: two relay processes, two ingestion
consumers and the control plane under gunicorn (`switchboard web`), RQ on a Redis server of its own.

10,000 requests across both relays are charged exactly (SQL, the live balance and what each answer
said it cost agree to the µ$); a ban, a price change and a channel disable made through the admin API
reach both relays within 2 s; a group's requests-per-minute limit is shared by both relays; a lost key
record is rebuilt; and the cron scripts run against the cluster and find the books consistent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from relay.cipher import Cipher
from relay.settings import RelaySettings
from tests import process_groups
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway import ROOT, free_port
from tests.redis_servers import RedisClusterNodes, RedisServer, wait_until
from tests.relay_process import RelayProcess
from tests.services import PostgresDatabase

pytestmark = pytest.mark.e2e

REQUESTS = 10_000
FUNDS = 100_000_000  # µ$: the seeded $100


class Fleet:
    def __init__(self, tmp_path, replicas: int = 0):
        self.procs: list[subprocess.Popen] = []
        self.relays: list[RelayProcess] = []
        self.cluster = RedisClusterNodes(tmp_path / "cluster", replicas=replicas)
        self.queue = RedisServer(tmp_path / "queue")
        self.database = PostgresDatabase()
        self.upstream = FakeOpenAI()
        self.charged = 0
        try:
            self._start(tmp_path)
        except BaseException:
            self.stop()
            raise

    def _start(self, tmp_path) -> None:
        key = Cipher.generate_key()
        self.web_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_") and k not in ("REDIS_URL", "DATABASE_URL")}
        self.env.update(DATABASE_URL=self.database.url, REDIS_URL=self.cluster.url, SWITCHBOARD_ENCRYPTION_KEY=key,
                        SWITCHBOARD_QUEUE_REDIS_URL=f"redis://127.0.0.1:{self.queue.port}/0", SWITCHBOARD_SECRET_KEY="cluster-e2e",
                        SWITCHBOARD_INSTANCE=str(tmp_path / "instance"), SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8",
                        SWITCHBOARD_PORT=str(self.web_port), SWITCHBOARD_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        self.run("db", "upgrade")
        self.world = json.loads(self.helper("seed", self.upstream.url))
        self.logs = tmp_path
        web = self.start("web", "--workers", "2")
        deadline = time.monotonic() + 60
        while not self._ready():
            assert web.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()[-3000:]
            time.sleep(0.2)
        self.start("ingest")
        self.start("ingest")
        settings = RelaySettings(redis_url=self.cluster.url, encryption_key=key, instance_dir=tmp_path / "instance")
        for _ in range(2):
            self.relays.append(RelayProcess(settings))

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def run(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "controlplane", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def helper(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "tests.e2e.cluster_world", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def _ready(self) -> bool:
        try:
            return requests.get(self.web + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{args[0]}-{len(self.procs)}.log" if args[0] != "web" else self.logs / "web.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "controlplane", *args], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def admin(self, method: str, path: str, body: dict) -> dict:
        reply = requests.request(method, self.web + "/admin/api/v1" + path, json=body, timeout=10,
                                 headers={"Authorization": f"Bearer {self.world['token']}"})
        assert reply.status_code in (200, 201), reply.text
        return reply.json()

    def money(self) -> dict:
        return json.loads(self.helper("money", str(self.world["account_id"])))

    def stop(self) -> None:
        for relay in self.relays:
            relay.stop()
        for proc in self.procs:
            process_groups.stop(proc)
        self.upstream.close()
        self.cluster.stop()
        self.queue.stop()
        self.database.drop()


@pytest.fixture
def fleet(tmp_path):
    built = Fleet(tmp_path)
    yield built
    built.stop()


def chat(session: requests.Session, relay: RelayProcess, secret: str) -> tuple[int, int]:
    reply = session.post(relay.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"}, timeout=30,
                         json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    return reply.status_code, int(reply.headers.get("x-switchboard-cost-micro-usd", 0)) if reply.status_code == 200 else 0


def until_both(fleet: Fleet, accepted: bool, cost: int | None = None) -> float:
    """Seconds until every relay answers as asked (served or refused; at `cost` when given)."""
    started = time.monotonic()
    session = requests.Session()
    pending = set(range(len(fleet.relays)))
    while pending:
        for n in list(pending):
            status, charged = chat(session, fleet.relays[n], fleet.world["secret"])
            fleet.charged += charged
            if (status == 200) == accepted and (cost is None or charged == cost):
                pending.discard(n)
        assert time.monotonic() - started < 10, "a change did not reach every relay within 10 s"
        time.sleep(0.01)
    return time.monotonic() - started


def test_ten_thousand_requests_on_two_relays_are_exact_and_changes_reach_both_within_two_seconds(fleet):
    secret = fleet.world["secret"]
    fleet.charged = 0

    def worker(n: int) -> tuple[int, int]:
        session = requests.Session()
        served = charged = 0
        for i in range(n, REQUESTS, 16):
            status, cost = chat(session, fleet.relays[i % 2], secret)
            assert status == 200
            served += 1
            charged += cost
        return served, charged

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(worker, range(16)))
    assert sum(served for served, _ in results) == REQUESTS
    fleet.charged += sum(charged for _, charged in results)
    each = fleet.charged // REQUESTS
    assert each > 0 and fleet.charged == each * REQUESTS  # every answer cost the same
    settled = wait_until(lambda: (lambda m: m if m["backlog"] == 0 and m["held"] == 0 and m["sql"] == m["live"] else None)(fleet.money()),
                         timeout=60, what="ingestion to catch up")
    assert settled["sql"] == settled["entries"] == settled["live"] == FUNDS - fleet.charged

    # A ban, through the admin API, reaches both relays; lifted, both serve again.
    fleet.admin("POST", f"/users/{fleet.world['user_id']}/ban", {"reason": "cluster e2e"})
    assert until_both(fleet, accepted=False) <= 2
    fleet.admin("POST", f"/users/{fleet.world['user_id']}/unban", {})
    assert until_both(fleet, accepted=True) <= 2
    # A price change: both relays charge the new price.
    fleet.admin("POST", "/prices", {"model": "gpt-4o-mini", "input": "6", "output": "30", "reason": "cluster e2e"})
    assert until_both(fleet, accepted=True, cost=each * 2) <= 2
    # A channel disabled: both relays stop routing to it; enabled again, both do.
    fleet.admin("POST", f"/channels/{fleet.world['channel_id']}/status", {"status": "disabled"})
    assert until_both(fleet, accepted=False) <= 2
    fleet.admin("POST", f"/channels/{fleet.world['channel_id']}/status", {"status": "enabled"})
    assert until_both(fleet, accepted=True) <= 2

    # A group limit of 40 requests a minute is one limit for both relays.
    fleet.helper("group-rpm", "40")
    time.sleep(2)
    wait_until(lambda: time.time() % 60 < 45, timeout=20, what="a minute with room for the burst")
    session = requests.Session()
    statuses = []
    for i in range(80):
        status, charged = chat(session, fleet.relays[i % 2], secret)
        statuses.append(status)
        fleet.charged += charged
    assert statuses.count(200) == 40 and statuses.count(429) == 40
    assert {s for s in statuses[::2] if s == 200} and {s for s in statuses[1::2] if s == 200}  # both relays served

    settled = wait_until(lambda: (lambda m: m if m["backlog"] == 0 and m["held"] == 0 and m["sql"] == m["live"] else None)(fleet.money()),
                         timeout=60, what="ingestion to catch up")
    assert settled["sql"] == settled["entries"] == settled["live"] == FUNDS - fleet.charged

    # A lost key record is rebuilt from SQL (the records spread over every master) and the drift sweep
    # finds nothing else to rewrite.
    assert json.loads(fleet.helper("lose-records", str(fleet.world["key_id"]))) == {"ready": True, "record": True, "swept": 0}
    for script in ("scripts.sweep_holds", "scripts.apply_health_reports", "scripts.prune_logs", "scripts.reconcile"):
        done = subprocess.run([sys.executable, "-m", script], cwd=ROOT, env=fleet.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (script, done.stdout[-2000:], done.stderr[-2000:])
    assert "consistent" in done.stdout


def test_the_fleet_serves_on_after_the_master_of_its_slot_is_lost(tmp_path):
    """A cluster with a replica per master; the master holding the channel's routing state (its
    limits and health, under its tag) is killed between requests (its writes replicated first, so
    nothing acknowledged is lost). Requests fail
    with a 503 and hold nothing until the replica is promoted, then both relays serve again, the
    consumers ingest again, a ban still reaches both relays, and the books are exact."""
    from redis.crc import key_slot

    from relay import redis_keys

    fleet = Fleet(tmp_path, replicas=1)
    try:
        secret = fleet.world["secret"]
        session = requests.Session()
        for i in range(100):
            status, charged = chat(session, fleet.relays[i % 2], secret)
            assert status == 200
            fleet.charged += charged
        slot = key_slot(f"sb:{{c{fleet.world['channel_id']}}}:".encode())
        master = next(n for n in fleet.cluster.nodes for start, end, owner, *_ in n.client().execute_command("CLUSTER", "SLOTS")
                      if start <= slot <= end and int(owner[1]) == n.port)
        # It serves the config channel's slot too (`sb:cfg`: 11671, in 10923-16383): the relays'
        # followers must subscribe again on the promoted replica for the ban below to reach them.
        assert any(start <= key_slot(redis_keys.CONFIG_CHANNEL.encode()) <= end for start, end, owner, *_ in master.client().execute_command("CLUSTER", "SLOTS")
                   if int(owner[1]) == master.port)
        assert master.client().execute_command("WAIT", 1, 5000) >= 1
        master.kill()

        refused, served_in_a_row, deadline = [], 0, time.monotonic() + 60
        while served_in_a_row < 20:
            assert time.monotonic() < deadline, f"not serving again: {refused[-5:]}"
            status, charged = chat(session, fleet.relays[served_in_a_row % 2], secret)
            if status == 200:
                served_in_a_row += 1
                fleet.charged += charged
            else:
                served_in_a_row = 0
                refused.append(status)
                time.sleep(0.05)
        assert set(refused) <= {503}

        fleet.admin("POST", f"/users/{fleet.world['user_id']}/ban", {"reason": "after the failover"})
        assert until_both(fleet, accepted=False) <= 2
        fleet.admin("POST", f"/users/{fleet.world['user_id']}/unban", {})
        assert until_both(fleet, accepted=True) <= 2

        settled = wait_until(lambda: (lambda m: m if m["backlog"] == 0 and m["held"] == 0 and m["sql"] == m["live"] else None)(fleet.money()),
                             timeout=90, what="ingestion to catch up after the failover")
        assert settled["sql"] == settled["entries"] == settled["live"] == FUNDS - fleet.charged
    finally:
        fleet.stop()
