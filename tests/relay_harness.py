"""The real relay in the test process: `build_relay` (pipeline, gate, upstream client) on the test's
Redis, following the snapshot the control plane publishes, called as the WSGI app it is. Fast enough
to run every routing and failure case against fake upstreams on real sockets."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import orjson
import redis as redis_lib
from sqlalchemy import func, select
from werkzeug.test import Client

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import Account, LedgerEntry, RequestLog
from relay.quota import Quota
from relay.server import build_relay
from workers import usage as usage_worker


class CountingRedis(redis_lib.Redis):
    """A Redis client that remembers every command it sent: the relay's round trips, counted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def execute_command(self, *args, **options):
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


# The admission path relays made here take when a test does not say (tests/conftest.py's
# `admission_layout` runs a module's tests in both): None as in production on one server.
ADMISSION_SPLIT: bool | None = None


class Relay:
    def __init__(self, app, **overrides):
        from relay.channel_stats import STATS

        STATS.forget()  # a new relay process measures from nothing; tests reuse channel ids after each reset
        overrides.setdefault("admission_split", ADMISSION_SPLIT)
        self.settings = replace(app.config["SWITCHBOARD"].relay_settings(), **overrides)
        self.redis = CountingRedis.from_url(self.settings.redis_url)
        self.app = build_relay(self.settings, redis=self.redis)
        self.client = Client(self.app)

    def chat(self, key: str, model: str = "gpt-4o-mini", stream: bool = False, buffered: bool = True, refresh: bool = True, **extra):
        """POST /v1/chat/completions with the latest published snapshot (a relay's follower loads it
        in the background; here it is loaded first)."""
        if refresh:
            self.app.holder.refresh()
        body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], **extra}
        if stream:
            body["stream"] = True
        return self.client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, buffered=buffered)

    @contextmanager
    def served(self):
        """The relay behind its own HTTP server (relay/http_server.py) on a real socket, in a thread
        with its own gevent hub: streams take the server's pumped path (relay/pump.py) rather than
        the WSGI iteration the in-process client drives. Yields the server's address."""
        from gevent import get_hub

        from relay.server import make_server

        box: dict = {}
        ready = threading.Event()

        def run():
            server = make_server(("127.0.0.1", 0), self.app, self.settings)
            server.init_socket()
            box["server"], box["loop"] = server, get_hub().loop
            ready.set()
            server.serve_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert ready.wait(10), "the relay's server did not start"
        self.app.holder.refresh()
        try:
            yield box["server"].address
        finally:
            box["loop"].run_callback_threadsafe(lambda: box["server"].stop(timeout=1))
            thread.join(5)

    def count_round_trips(self, call) -> list[str]:
        """The Redis commands `call` sent (after a warm-up call has loaded the scripts)."""
        self.app.holder.refresh()
        self.redis.commands.clear()
        call()
        return list(self.redis.commands)


def events_of(body: bytes) -> list[dict | str]:
    """SSE `data:` payloads, JSON-decoded ("[DONE]" stays a string)."""
    found = []
    for block in body.split(b"\n\n"):
        if block.startswith(b"data: "):
            data = block[len(b"data: "):]
            found.append(data.decode() if data == b"[DONE]" else orjson.loads(data))
    return found


def ingest() -> None:
    """What the usage worker does every second: usage events → request logs and charges."""
    usage_worker.ingest(max_seconds=5)


def request_log(request_id: str, wait: float = 5.0) -> RequestLog:
    """The request's log once ingested. A stream that failed mid-way is settled after its last bytes
    reached the caller (relay/streaming.py), so a caller that has read the whole body may be ahead
    of its usage event: wait for it, up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        ingest()
        row = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
        if row is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert row is not None, f"no request log for {request_id}"
    return row


def steps(log: RequestLog, step: str) -> list[dict]:
    return [entry for entry in log.trace if entry.get("step") == step]


def open_holds_described(redis) -> list[dict]:
    """Each hold still open: its record, expiry and whether its request was logged (for a failure's message)."""
    import time

    from relay.redis_keys import HOLDS_INDEXES, hold_key

    described = []
    for rid, expires in redis.zrange(HOLDS_INDEXES[0], 0, 20, withscores=True):
        rid = rid.decode()
        record = {k.decode(): v.decode() for k, v in redis.hgetall(hold_key(0, rid)).items()}
        logged = db.session.scalar(select(RequestLog.status).where(RequestLog.request_id == rid))
        described.append({"request": rid, "expires_in": round(expires - time.time(), 1), "record": record, "logged_status": logged})
    return described


def assert_money_consistent(redis) -> None:
    """The ledger invariants: every balance is the sum of its entries in SQL and in Redis, nothing is
    held, no request is charged twice, and every charge matches its request log."""
    ingest()
    quota = Quota(redis)
    assert quota.open_holds() == 0, open_holds_described(redis)
    for account_id in db.session.scalars(select(Account.id)):
        assert ledger.sum_of_entries(account_id) == ledger.stored_balance(account_id) == quota.account(account_id)[0]
        assert quota.account(account_id)[1] == 0
    twice = db.session.execute(
        select(LedgerEntry.request_id).where(LedgerEntry.kind == "charge").group_by(LedgerEntry.request_id).having(func.count() > 1)
    ).all()
    assert twice == []
    charges = dict(db.session.execute(select(LedgerEntry.request_id, LedgerEntry.amount).where(LedgerEntry.kind == "charge")).all())
    logged = dict(db.session.execute(select(RequestLog.request_id, RequestLog.cost).where(RequestLog.cost != 0)).all())
    assert {rid: -amount for rid, amount in charges.items()} == logged
