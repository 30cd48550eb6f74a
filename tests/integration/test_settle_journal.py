"""Redis dies while a stream is answering: the caller still gets the whole answer, the settle goes to
the relay's journal on disk, and when Redis is back the journal is replayed and the request is billed
exactly once — whether Redis kept its data (the hold is still there) or lost it (a restart without
persistence). While Redis is down, new requests are refused with a 503 in the caller's format.

A private redis-server per test, killed with SIGKILL and started again on the same port."""
from __future__ import annotations

import json
import os

import pytest
import requests
from sqlalchemy import func, select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import LedgerEntry, RequestLog
from controlplane.snapshot import publish
from relay.journal import PREFIX, JournalEntry
from relay.quota import Quota
from relay.server import replay_journals
from tests import factories
from tests.conftest import build_app
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.private_services import PrivateRedis
from tests.integration.test_stream_pump import Reply, connect, request
from tests.relay_harness import Relay, assert_money_consistent, ingest

WORDS = " ".join(f"w{i}" for i in range(30))


@pytest.fixture(params=["redis-keeps-its-data", "redis-loses-its-data"])
def world(request, tmp_path):
    private = PrivateRedis(tmp_path, persistent=request.param == "redis-keeps-its-data")
    app = build_app(f"sqlite:///{tmp_path / 'switchboard.db'}", private.url, tmp_path / "instance")
    fake = FakeOpenAI()
    try:
        with app.app_context():
            factories.price("gpt-4o-mini", input="3", output="15")
            user = factories.funded_user("10")
            _, secret = factories.api_key(user)
            factories.channel(fake.url, keys_=("sk-up-1",))
            relay = Relay(app)
            yield relay, private, fake, secret, user.account_id
    finally:
        fake.close()
        private.stop()


def journal_lines(relay: Relay) -> list[bytes]:
    folder = relay.settings.instance_dir / "journal"
    return [line for path in folder.glob(f"{PREFIX}*") for line in path.read_bytes().splitlines() if line.strip()]


def charges() -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "charge"))


def test_a_stream_answered_while_redis_died_is_billed_exactly_once_after_it_returns(world):
    relay, private, fake, key, account_id = world
    fake.push(Behaviour(content=WORDS, chunk_gap=0.03))
    with relay.served() as address:
        sock = connect(address)
        sock.sendall(request(key))
        reply = Reply(sock)
        reply.read_chunk()
        private.kill()  # mid-stream: the answer keeps coming, the settle will find no Redis
        body = reply.read_all()
        sock.close()
        request_id = reply.headers["x-request-id"]
        assert reply.status == 200 and b"[DONE]" in body and b"w29" in body
        assert len(journal_lines(relay)) == 1 and JournalEntry.decode(journal_lines(relay)[0]).hold.request_id == request_id

        # While Redis is away, a new request is refused before it can cost anything.
        refused = requests.post(f"http://{address[0]}:{address[1]}/v1/chat/completions", timeout=10, headers={"Authorization": f"Bearer {key}"},
                                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 503 and 1 <= int(refused.headers["Retry-After"]) <= 5
        assert refused.json()["error"]["code"] == "service_unavailable" and len(fake.chat_requests()) == 1
        anthropic = requests.post(f"http://{address[0]}:{address[1]}/v1/messages", timeout=10, headers={"x-api-key": key},
                                  json={"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
        assert anthropic.status_code == 503 and anthropic.json()["type"] == "error"

    private.start()
    publish()  # the control plane's publish seeds what a Redis that lost its data no longer knows
    replay_journals(relay.app.pipeline, once=True)
    assert journal_lines(relay) == []
    ingest()
    log = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
    assert log is not None and log.status == 200 and log.output_tokens == 30 and log.cost > 0
    assert charges() == 1 and ledger.stored_balance(account_id) == 10_000_000 - log.cost
    assert Quota(relay.redis).account(account_id) == (10_000_000 - log.cost, 0)

    # A replay of the same settle (a relay that died before it emptied its journal) changes nothing.
    folder = relay.settings.instance_dir / "journal"
    leftover = folder / f"{PREFIX}999999.jsonl"
    leftover.write_bytes(JournalEntry.decode(journal_line_of(log, account_id, relay)).encode())
    replay_journals(relay.app.pipeline, once=True)
    assert not leftover.exists()
    ingest()
    assert charges() == 1 and Quota(relay.redis).account(account_id) == (10_000_000 - log.cost, 0)
    assert_money_consistent(relay.redis)


def test_a_stream_whose_hold_redis_lost_while_it_ran_is_billed_once_after_all(world):
    """Redis comes back empty before the stream ends (a restart without its data): the settle finds
    Redis answering but no hold. The answer was delivered, so it is still billed — once."""
    relay, _, fake, key, account_id = world
    fake.push(Behaviour(content=WORDS, chunk_gap=0.03))
    with relay.served() as address:
        sock = connect(address)
        sock.sendall(request(key))
        reply = Reply(sock)
        reply.read_chunk()
        relay.redis.flushall()  # mid-stream: the hold, the balance and the key records are gone
        body = reply.read_all()
        sock.close()
    request_id = reply.headers["x-request-id"]
    assert reply.status == 200 and b"[DONE]" in body and journal_lines(relay) == []
    publish()  # what the control plane's rebuild puts back from SQL: balances and key records
    ingest()
    log = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
    assert log is not None and log.status == 200 and log.output_tokens == 30 and log.cost > 0
    assert charges() == 1 and ledger.stored_balance(account_id) == 10_000_000 - log.cost == ledger.sum_of_entries(account_id)
    assert Quota(relay.redis).account(account_id) == (10_000_000 - log.cost, 0)


def journal_line_of(log: RequestLog, account_id: int, relay: Relay) -> bytes:
    """The journal line a relay would have written for this request's settle."""
    from relay.quota import hold_record
    from relay.usage import UsageEvent

    event = UsageEvent(request_id=log.request_id, started_at=0, finished_at=0, endpoint="/v1/chat/completions", status=200,
                       account_id=account_id, api_key_id=log.api_key_id, cost=log.cost)
    entry = JournalEntry(hold_record(log.request_id, account_id, log.api_key_id, log.cost), log.cost, event.encode())
    return entry.encode()


def test_journals_are_private_files_and_a_torn_line_is_skipped(tmp_path):
    from relay.journal import SettleJournal

    journal = SettleJournal(tmp_path / "journal", pid=os.getpid())
    from relay.quota import hold_record

    journal.append(JournalEntry(hold_record("req_a", 1, 2, 100), 50, json.dumps({"request_id": "req_a"}).encode()))
    with open(journal.path, "ab") as handle:
        handle.write(b'{"rid": "req_b", "acct"')  # a crash mid-write
    assert oct(journal.path.stat().st_mode & 0o777) == "0o600" and oct(journal.path.parent.stat().st_mode & 0o777) == "0o700"
    seen: list[str] = []
    assert journal.replay_own(lambda entry: seen.append(entry.hold.request_id)) == 1
    assert seen == ["req_a"] and not journal.path.exists() and not journal.aside_path.exists()


def test_a_line_journaled_while_a_replay_waits_on_redis_is_replayed_too(tmp_path):
    """A replay yields while it waits on Redis, and a request may journal meanwhile: that line goes
    to a new journal, not into the one being replayed and then removed."""
    from relay.journal import SettleJournal
    from relay.quota import hold_record

    journal = SettleJournal(tmp_path / "journal", pid=os.getpid())
    journal.append(JournalEntry(hold_record("req_a", 1, 2, 100), 50, b"{}"))
    seen: list[str] = []

    def apply(entry):
        if entry.hold.request_id == "req_a":  # as if another greenlet ran while this one waited
            journal.append(JournalEntry(hold_record("req_b", 1, 2, 100), 60, b"{}"))
        seen.append(entry.hold.request_id)

    assert journal.replay_own(apply) == 2
    assert seen == ["req_a", "req_b"] and not journal.pending()


def test_a_replay_cut_short_by_redis_resumes_where_the_journal_was_moved_aside(tmp_path):
    from relay.journal import SettleJournal
    from relay.quota import hold_record

    journal = SettleJournal(tmp_path / "journal", pid=os.getpid())
    journal.append(JournalEntry(hold_record("req_a", 1, 2, 100), 50, b"{}"))

    def down(entry):
        journal.append(JournalEntry(hold_record("req_b", 1, 2, 100), 60, b"{}"))
        raise ConnectionError("Redis is away")

    with pytest.raises(ConnectionError):
        journal.replay_own(down)
    seen: list[str] = []
    assert journal.replay_own(lambda entry: seen.append(entry.hold.request_id)) == 2
    assert seen == ["req_a", "req_b"] and not journal.aside_path.exists() and not journal.pending()


def test_a_live_process_journal_is_left_to_its_owner(tmp_path):
    from relay.journal import SettleJournal
    from relay.quota import hold_record

    owner = SettleJournal(tmp_path / "journal", pid=111)
    owner.append(JournalEntry(hold_record("req_live", 1, 2, 100), 50, b"{}"))
    other = SettleJournal(tmp_path / "journal", pid=222)
    # flock locks belong to open file descriptions: the owner's is held even against this process's
    # second open, as it is against another process.
    seen: list[str] = []
    assert other.replay_orphans(lambda entry: seen.append(entry.hold.request_id)) == 0 and seen == []
    assert owner.path.exists()
