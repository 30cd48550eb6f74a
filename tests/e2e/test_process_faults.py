"""Faults on real processes: `switchboard up` (its relay, worker, scheduler and usage consumer) and
separate `switchboard relay` processes, on a Redis and a PostgreSQL of the module's own — so that they
can be killed, stopped and started again without touching the machine's shared servers.

Each scenario asserts what the caller got, what was charged, and the money invariants once ingestion
has caught up: Σ ledger = SQL balance = live balance for every account, no hold left open, no request
charged twice, every charge equal to its request log's cost.

The processes are shared: scenarios run in order and each leaves everything running and consistent
for the next. PostgreSQL is kept down for 30 s: the consumer fails and backs off (1, 2, 4, 8, 16 s)
with events waiting. Should a child of `up` outlive it when it is SIGKILLed, the failure shows where
that child was stuck (faulthandler's stacks, asked for with SIGABRT)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_lib
import requests
from sqlalchemy import func, select

from controlplane.extensions import db
from controlplane.models import LedgerEntry, RequestLog
from controlplane.snapshot import publish
from relay.journal import PREFIX
from relay.quota import Quota
from relay.usage import USAGE_GROUP, USAGE_STREAMS
from tests import factories, process_groups
from tests.conftest import build_app
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.gateway import ROOT, Gateway, free_port
from tests.private_services import PrivatePostgres, PrivateRedis
from tests.relay_harness import assert_money_consistent, open_holds_described
from workers.maintenance import sweep_holds

pytestmark = pytest.mark.e2e

WORDS = " ".join(f"w{i}" for i in range(30))
FUNDS = 10_000_000  # µ$ the customer starts with
# Each model is its own channel with its own upstream key, and the fake answers per key: scenarios
# running side by side never take each other's scripted answers.
MODELS = {
    "gpt-4o-mini": Behaviour(content="short answer"),
    "gpt-slow": Behaviour(content=WORDS, chunk_gap=0.05),  # a 1.5 s stream
    "gpt-think": Behaviour(content="considered answer", first_byte_delay=1.0),
}


@dataclass
class World:
    instance: Path
    pg: PrivatePostgres
    redis: PrivateRedis
    fake: FakeOpenAI
    app: object
    env: dict[str, str]
    key: str
    account_id: int
    gateway: Gateway | None = None
    relays: list = field(default_factory=list)

    @property
    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.redis.url)

    def up(self) -> Gateway:
        self.gateway = Gateway(self.instance, self.env)
        return self.gateway

    def relay(self, **env: str) -> "Relay":
        started = Relay(self, **env)
        self.relays.append(started)
        return started


class Relay:
    """`switchboard relay` on the world's Redis and instance folder (so it shares the journal folder
    with `up`), its log in a file."""

    def __init__(self, world: World, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_") and k not in ("DATABASE_URL", "REDIS_URL")}
        environ.update(REDIS_URL=world.redis.url, SWITCHBOARD_ENCRYPTION_KEY=world.env["SWITCHBOARD_ENCRYPTION_KEY"],
                       SWITCHBOARD_INSTANCE=str(world.instance), SWITCHBOARD_LOG_LEVEL="WARNING", SWITCHBOARD_SNAPSHOT_POLL_SECONDS="0.5",
                       SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8", PYTHONUNBUFFERED="1", **env)
        self.log = world.instance.parent / f"relay-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "controlplane", "relay", "--host", "127.0.0.1", "--port", str(self.port)],
                                         cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the relay exited: " + self.log.read_text()[-2000:]
            try:
                if requests.get(self.url + "/v1/healthz", timeout=1).json()["snapshot_version"]:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError("the relay did not start: " + self.log.read_text()[-2000:])

    def kill(self) -> None:
        process_groups.kill(self.proc, wait=10)

    def stop(self) -> None:
        process_groups.stop(self.proc)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("process-faults")
    instance = folder / "instance"
    instance.mkdir(mode=0o700)
    pg = PrivatePostgres()
    private_redis = PrivateRedis(folder, persistent=True)
    fake = FakeOpenAI()
    world = None
    try:
        app = build_app(pg.url, private_redis.url, instance)
        settings = app.extensions["switchboard"].settings
        with app.app_context():
            for model in MODELS:
                factories.price(model, input="3", output="15")
                factories.channel(fake.url, models=(model,), keys_=(f"sk-{model}",))
                fake.by_key[f"sk-{model}"] = MODELS[model]
            user = factories.funded_user("10")
            _, secret = factories.api_key(user)
            publish()
            account_id = user.account_id
        env = {
            "DATABASE_URL": pg.url, "REDIS_URL": private_redis.url, "SWITCHBOARD_ENCRYPTION_KEY": settings.encryption_key,
            "SWITCHBOARD_SECRET_KEY": settings.secret_key, "SWITCHBOARD_SNAPSHOT_POLL_SECONDS": "0.5",
            # small batches, a short linger: a burst of requests is several batches, one to die in
            "SWITCHBOARD_USAGE_BATCH": "40", "SWITCHBOARD_USAGE_LINGER_MS": "20",
            "SWITCHBOARD_PROBE_EVERY_SECONDS": "0",  # no probes taking the fake's answers
            "PYTHONFAULTHANDLER": "1",  # a SIGABRT prints every thread's stack: what an orphan was stuck in
        }
        world = World(instance, pg, private_redis, fake, app, env, secret, account_id)
        world.up()
        yield world
    finally:
        if world is not None:
            for relay in world.relays:
                relay.kill()
            if world.gateway is not None:
                world.gateway.stop()
        fake.close()
        private_redis.stop()
        pg.close()


# --- callers ---------------------------------------------------------------------------------------
def chat(base: str, key: str, model: str = "gpt-4o-mini", timeout: float = 10) -> requests.Response:
    return requests.post(base + "/v1/chat/completions", timeout=timeout, headers={"Authorization": f"Bearer {key}"},
                         json={"model": model, "messages": [{"role": "user", "content": "Say hello"}]})


def raw_request(key: str, model: str, stream: bool) -> bytes:
    body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nAuthorization: Bearer "
            + key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class Stream:
    """A streamed chat read on a thread of its own: its request id, and everything it received."""

    def __init__(self, base: str, key: str, model: str = "gpt-slow"):
        self.response = requests.post(base + "/v1/chat/completions", timeout=30, stream=True, headers={"Authorization": f"Bearer {key}"},
                                      json={"model": model, "stream": True, "messages": [{"role": "user", "content": "Say hello"}]})
        self.request_id = self.response.headers["x-request-id"]
        self.body = b""
        self.cut = False
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.first.wait(10), "no first event"

    def _read(self) -> None:
        try:
            for piece in self.response.iter_content(None):
                self.body += piece
                if b"w2" in self.body:  # a few words in
                    self.first.set()
        except requests.RequestException:
            self.cut = True
        finally:
            self.first.set()

    def finished(self, timeout: float = 15) -> "Stream":
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream never ended"
        return self


class Traffic:
    """Callers sending requests one after another from a few threads until stopped; what each got."""

    def __init__(self, base: str, key: str, threads: int = 2):
        self.base, self.key = base, key
        self.got: list[tuple[int, str | None, str | None]] = []  # status (0: no answer), request id, Retry-After
        self.odd: list[str] = []  # the answers other than 200 and 503, with their bodies
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                answer = session.post(self.base + "/v1/chat/completions", timeout=10, headers={"Authorization": f"Bearer {self.key}"},
                                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]})
                self.got.append((answer.status_code, answer.headers.get("x-request-id"), answer.headers.get("Retry-After")))
                if answer.status_code not in (200, 503):
                    self.odd.append(f"{answer.status_code} {answer.headers.get('x-request-id')}: {answer.text[:300]}")
            except requests.RequestException:
                self.got.append((0, None, None))
            time.sleep(0.05)

    def answered(self) -> list[str]:
        return [rid for status, rid, _ in self.got if status == 200]

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(15)


def burst(base: str, key: str, count: int, threads: int = 6) -> list[requests.Response]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: chat(base, key), range(count)))


# --- looking at the books --------------------------------------------------------------------------
def until(condition, timeout: float = 30.0, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())


def drained(world: World, timeout: float = 90) -> None:
    """Until ingestion has written (and so removed) every usage event: none waiting, none pending. The
    wait is long because a consumer (re)started under load takes seconds just to import."""
    client = world.client

    def empty() -> bool:
        try:
            return client.xlen(USAGE_STREAMS[0]) == 0 and client.xpending(USAGE_STREAMS[0], USAGE_GROUP)["pending"] == 0
        except redis_lib.ResponseError:  # no group yet
            return False

    assert until(empty, timeout, 0.2), f"usage still waiting: {client.xlen(USAGE_STREAMS[0])} events\n" + "\n".join(world.gateway.output[-40:])


@contextmanager
def books(world: World):
    """An app context on the world's database, fresh."""
    with world.app.app_context():
        db.session.remove()
        db.engine.dispose()  # connections from before a PostgreSQL restart are dead
        yield
        db.session.rollback()


def charges_of(request_ids) -> Counter:
    wanted = set(request_ids)
    rows = db.session.execute(select(LedgerEntry.request_id).where(LedgerEntry.kind == "charge")).scalars()
    return Counter(rid for rid in rows if rid in wanted)


def logs_of(request_ids) -> dict[str, RequestLog]:
    wanted = list(request_ids)
    found: dict[str, RequestLog] = {}
    for start in range(0, len(wanted), 500):
        for log in db.session.scalars(select(RequestLog).where(RequestLog.request_id.in_(wanted[start:start + 500]))):
            found[log.request_id] = log
    return found


def assert_billed_once(world: World, answered: list[str]) -> None:
    """Every answer the callers got is logged and charged exactly once, and the books balance."""
    drained(world)
    with books(world):
        logs = logs_of(answered)
        assert sorted(logs) == sorted(set(answered)), f"{len(set(answered)) - len(logs)} answers have no request log"
        charged = charges_of(answered)
        assert all(charged[rid] == 1 for rid in answered), {rid: n for rid, n in charged.items() if n != 1}
        assert len(charged) == len(set(answered))
        held = open_holds_described(world.client)
        assert held == [], (held, [line for line in world.gateway.output if any(h["request"] in line for h in held)])
        assert_money_consistent(world.client)


def children_of(gateway: Gateway) -> dict[str, int]:
    """`up`'s running children by name (worker, probe worker, scheduler, ingest)."""
    found = {}
    listed = subprocess.run(["pgrep", "-P", str(gateway.proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in listed:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        words = [a.decode() for a in args if a]
        if "controlplane" in words:
            rest = words[words.index("controlplane") + 1:]
            name = "probe worker" if rest[:3] == ["worker", "--queue", "probe"] else rest[0]
            found[name] = int(pid)
    return found


def journal_files(world: World) -> dict[int, int]:
    """pid → bytes waiting in that relay process's settle journal (and the part of it a replay that
    Redis interrupted moved aside: `settle-<pid>-replaying.jsonl`)."""
    folder = world.instance / "journal"
    waiting: dict[int, int] = {}
    for path in folder.glob(f"{PREFIX}*") if folder.is_dir() else ():
        pid = int(path.name[len(PREFIX):].split(".")[0].removesuffix("-replaying"))
        waiting[pid] = waiting.get(pid, 0) + path.stat().st_size
    return waiting


# --- the scenarios ---------------------------------------------------------------------------------
def test_a_relay_killed_mid_stream_cuts_the_stream_and_its_hold_is_released_uncharged(world):
    """SIGKILL: nothing settles the request. The caller's stream is cut (no [DONE]); the hold stays
    until its request's deadline (3 s here) plus the margin (1 s) have passed, then the sweeper
    releases it: the money is the customer's again and nothing is charged."""
    relay = world.relay(SWITCHBOARD_UPSTREAM_TOTAL_TIMEOUT="3", SWITCHBOARD_HOLD_MARGIN_SECONDS="1")
    quota = Quota(world.client)
    balance = quota.account(world.account_id)[0]
    stream = Stream(relay.url, world.key)
    assert quota.open_holds() == 1 and quota.account(world.account_id)[1] > 0
    relay.kill()
    stream.finished()
    assert b"data: " in stream.body and b"[DONE]" not in stream.body and b"w29" not in stream.body
    assert quota.open_holds() == 1  # the dead relay's
    with books(world):
        # Whichever sweeper comes first after the deadline releases it: this one, or the one `up`'s
        # scheduler runs every minute.
        assert until(lambda: sweep_holds() >= 0 and quota.open_holds() == 0, 10, 0.25), "the hold was never released"
    assert quota.open_holds() == 0 and quota.account(world.account_id) == (balance, 0)
    drained(world)
    with books(world):
        assert logs_of([stream.request_id]) == {} and charges_of([stream.request_id]) == Counter()
    assert_billed_once(world, [])


def test_redis_killed_and_restarted_mid_traffic_bills_every_answer_once(world):
    """Redis SIGKILLed under load, with streams in flight on `up` and on a separate relay, and back
    (with its data) a few seconds later. The streams are answered in full and their settles journaled;
    the separate relay is then SIGKILLed before Redis returns, so its journal is an orphan that the
    next relay to start replays. Meanwhile callers get 503 with Retry-After, nothing is held for them;
    `up`'s children live on (or come back) and its scheduler keeps scheduling."""
    gateway = world.gateway
    second = world.relay()
    traffic = Traffic(gateway.url, world.key)
    assert until(lambda: len(traffic.answered()) >= 5, 10)
    streams = [Stream(gateway.url, world.key), Stream(second.url, world.key)]
    world.redis.kill()
    try:
        for stream in streams:
            stream.finished()
            assert not stream.cut and stream.body.rstrip().endswith(b"data: [DONE]") and b"w29" in stream.body
        journals = journal_files(world)
        assert journals.get(gateway.proc.pid, 0) > 0 and journals.get(second.proc.pid, 0) > 0, journals
        second.kill()
        refused = chat(gateway.url, world.key)
        assert refused.status_code == 503 and 1 <= int(refused.headers["Retry-After"]) <= 5
        assert refused.json()["error"]["code"] == "service_unavailable"
    finally:  # a failure here must not leave the next scenarios without Redis
        back = time.time()
        world.redis.start()

    third = world.relay()  # replays the dead relay's journal as it starts
    assert until(lambda: second.proc.pid not in journal_files(world), 10), journal_files(world)
    assert until(lambda: journal_files(world).get(gateway.proc.pid, 0) == 0, 15), "up never replayed its journal"
    answered_before = len(traffic.answered())
    assert until(lambda: len(traffic.answered()) > answered_before + 5, 20), "requests were not answered again after Redis came back"
    traffic.stop()
    third.stop()
    assert [status for status, _, _ in traffic.got if status not in (200, 503)] == [], \
        (traffic.odd, [line for line in gateway.output if "ERROR" in line or "Traceback" in line or "Error" in line][-20:])

    client = world.client
    scheduled = [k for k in client.keys("rq:cron_job:*:jobs") if b"apply_reports" in k]
    assert until(lambda: any(client.zrangebyscore(k, back, "+inf") for k in client.keys("rq:cron_job:*:jobs") if b"apply_reports" in k), 20), \
        ("the scheduler stopped scheduling after Redis came back", scheduled, "\n".join(gateway.output[-30:]))
    assert set(children_of(gateway)) == {"worker", "probe worker", "scheduler", "ingest"}, "\n".join(gateway.output[-30:])

    answered = traffic.answered() + [s.request_id for s in streams]
    assert_billed_once(world, answered)
    with books(world):
        logs = logs_of([s.request_id for s in streams])
        assert [(logs[s.request_id].status, logs[s.request_id].output_tokens) for s in streams] == [(200, 30), (200, 30)]
        refused_ids = [rid for status, rid, _ in traffic.got if status == 503 and rid]
        assert charges_of(refused_ids) == Counter()


def test_the_consumer_killed_mid_batch_is_restarted_and_writes_every_event_once(world):
    """SIGKILL to `up`'s usage consumer while it works through a backlog of batches: `up` starts it
    again, the new one takes over what the dead one read and did not acknowledge, and every request
    is written once."""
    gateway = world.gateway
    client = world.client
    consumer = children_of(gateway)["ingest"]
    name = f"{socket.gethostname()}:{consumer}"

    def holding() -> int:
        """Events the consumer has read and not acknowledged."""
        return next((int(c["pending"]) for c in client.xinfo_consumers(USAGE_STREAMS[0], USAGE_GROUP) if c["name"].decode() == name), 0)

    os.kill(consumer, signal.SIGSTOP)  # a backlog gathers; its blocked read takes a batch of it
    try:
        answers = burst(gateway.url, world.key, 150)
    finally:
        os.kill(consumer, signal.SIGCONT)
    assert until(lambda: holding() > 0, 10, 0.005)
    os.kill(consumer, signal.SIGKILL)  # in the middle of its batches: some written, one read and not acknowledged
    assert holding() > 0
    assert [a.status_code for a in answers] == [200] * 150
    assert until(lambda: children_of(gateway).get("ingest") not in (None, consumer), 15), "\n".join(gateway.output[-20:])
    assert any(f"ingest (pid {consumer}) exited with -9; restarting" in line for line in gateway.output)
    assert_billed_once(world, [a.headers["x-request-id"] for a in answers])
    assert any("took over" in line and name in line for line in gateway.output), "\n".join(gateway.output[-20:])


PG_DOWN_SECONDS = 30


def test_postgresql_stopped_while_the_relay_serves_loses_nothing_and_the_backlog_drains_after(world):
    """The relay needs no SQL: callers are served while PostgreSQL is down; ingestion waits with the
    events pending (never acknowledged, never dead-lettered) and writes each once when it is back."""
    gateway = world.gateway
    world.pg.stop()
    down = time.monotonic()
    try:
        answers = []
        while time.monotonic() - down < PG_DOWN_SECONDS:
            answers.append(chat(gateway.url, world.key))
            time.sleep(0.2)
        assert [a.status_code for a in answers] == [200] * len(answers)
        client = world.client
        assert client.xlen(USAGE_STREAMS[0]) >= len(answers)  # nothing written, nothing dropped
        assert client.xlen("sb:usage:dead") == 0
    finally:
        world.pg.start()
    assert_billed_once(world, [a.headers["x-request-id"] for a in answers])
    assert any("usage consumer waiting" in line and "database" in line for line in gateway.output), "\n".join(gateway.output[-20:])


def test_the_control_plane_killed_leaves_the_relay_serving_its_snapshot(world):
    """`up` (the consoles, the worker, the scheduler, the consumer) SIGKILLed: a separate relay keeps
    serving from its snapshot and settling in Redis; the usage waits in the stream until the control
    plane is back, then is written once."""
    relay = world.relay()
    gateway = world.gateway
    named = children_of(gateway)
    children = list(named.values())
    os.kill(gateway.proc.pid, signal.SIGKILL)
    gateway.proc.wait(10)
    if not until(lambda: not any(Path(f"/proc/{pid}").exists() and _running(pid) for pid in children), 30):
        outlived = [n for n, p in named.items() if _running(p)]
        for name in outlived:
            os.kill(named[name], signal.SIGABRT)  # faulthandler prints its threads' stacks to `up`'s output
        time.sleep(2)
        pytest.fail(f"up's children outlived it: {outlived}\n" + "\n".join(gateway.output[-120:]))
    quota = Quota(world.client)
    before = quota.account(world.account_id)[0]
    answers = [chat(relay.url, world.key) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    assert quota.account(world.account_id)[0] < before  # charged live, in Redis
    assert world.client.xlen(USAGE_STREAMS[0]) >= 20  # nobody ingests
    with pytest.raises(requests.ConnectionError):
        requests.get(gateway.url + "/healthz", timeout=2)
    world.up()  # the control plane is back
    relay.stop()
    assert_billed_once(world, [a.headers["x-request-id"] for a in answers])


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_callers_hanging_up_mid_body_or_before_the_headers_are_charged_at_most_once(world):
    """The hang-ups the other suites do not cover, on the real process (mid-stream and before a
    stream's first byte: tests/integration/test_stream_pump.py, test_stream_edges.py and
    e2e/test_routing_e2e.py). A caller gone in the middle of its request body: nothing is held,
    nothing called, nothing charged. A caller gone while a non-streamed answer is being made: the
    upstream's work is settled once."""
    gateway = world.gateway
    calls = len(world.fake.chat_requests())
    whole = raw_request(world.key, "gpt-4o-mini", stream=False)
    head, _, body = whole.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(head + b"\r\n\r\n" + body[: len(body) // 2])
        time.sleep(0.3)
    thinking = socket.create_connection(("127.0.0.1", gateway.port))
    thinking.sendall(raw_request(world.key, "gpt-think", stream=False))
    time.sleep(0.3)  # the upstream is thinking for a second
    thinking.close()
    assert until(lambda: len(world.fake.chat_requests()) == calls + 1, 10)  # only the whole request reached it
    time.sleep(1.5)
    drained(world)
    with books(world):
        [log] = db.session.scalars(select(RequestLog).where(RequestLog.model == "gpt-think")).all()
        request_id = log.request_id
        assert db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.request_id == request_id)) == 1
    assert_billed_once(world, [request_id])
