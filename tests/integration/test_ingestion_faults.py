"""Ingestion that one bad event cannot stop, on both SQL back ends: the event the database refuses goes
to the dead-letter stream with the error, the rest are written, and nothing leaves the usage stream
unless it is in SQL or dead-lettered."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from controlplane import dead_letters, ledger
from controlplane.extensions import db
from controlplane.models import Account, AuditEntry, LedgerEntry, RequestLog
from controlplane.notify import signature
from controlplane.runtime import runtime
from controlplane.services import dead_letters as dead_letter_service
from relay.usage import USAGE_GROUP, USAGE_STREAMS, UsageEvent
from tests import factories
from tests.fakes.http import FakeServer, Handler
from tests.fakes.smtp_server import FakeSMTP
from workers import alerts
from workers import reconcile as reconcile_worker
from workers import usage as usage_worker

GHOST = 9_000_001  # an account id no row has


def _event(rid: str, account_id: int, key_id: int | None, cost: int, **fields) -> UsageEvent:
    values = {"model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5} | fields
    return UsageEvent(request_id=rid, started_at=1.7e9, finished_at=1.7e9 + 1, endpoint="/v1/chat/completions", status=200,
                      api_key_id=key_id, account_id=account_id, cost=cost, **values)


def _queue(redis, *events, raw: bytes | None = None) -> None:
    for e in events:
        redis.xadd(USAGE_STREAMS[0], {"e": e.encode()})
    if raw is not None:
        redis.xadd(USAGE_STREAMS[0], {"e": raw})


def _charges() -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "charge"))


def _unacknowledged(redis) -> int:
    return redis.xpending(USAGE_STREAMS[0], USAGE_GROUP)["pending"]


def test_a_poison_event_is_dead_lettered_and_the_rest_of_its_batch_written(sql_app, redis_client):
    user = factories.funded_user("1")
    key, _ = factories.api_key(user)
    good = [_event(f"req_good{i}", user.account_id, key.id, 100) for i in range(3)]
    long_model = _event("req_long", user.account_id, key.id, 100, model="m" * 300)  # varchar(200): cut, not refused
    poison = _event("req_poison", GHOST, None, 50)  # its charge names an account that does not exist
    huge = _event("req_huge", user.account_id, key.id, 0, output_tokens=3_000_000_000)  # beyond PostgreSQL's integer
    _queue(redis_client, good[0], poison, good[1], long_model, good[0], huge, good[2], raw=b"{not json")
    assert usage_worker.ingest() == 4
    assert redis_client.xlen(USAGE_STREAMS[0]) == 0 and _unacknowledged(redis_client) == 0
    assert ledger.sum_of_entries(user.account_id) == ledger.stored_balance(user.account_id) == 1_000_000 - 400
    assert len(db.session.scalar(select(RequestLog.model).where(RequestLog.request_id == "req_long"))) == 200
    dead = {(d.event.request_id if d.event else None): d for d in dead_letters.newest(redis_client)[0]}
    assert set(dead) == {"req_poison", "req_huge", None}
    assert "foreign key" in dead["req_poison"].error.lower()
    assert "output_tokens 3000000000 is outside" in dead["req_huge"].error
    assert dead[None].error.startswith("InvalidEvent: unreadable event") and dead[None].raw == b"{not json"
    # Reconcile counts what waits in the dead letters as charged live but not yet in SQL.
    assert reconcile_worker.pending_charges(redis_client)[GHOST] == 50


def test_a_retry_after_the_cause_is_fixed_writes_the_event_once(sql_app, redis_client):
    # Settle could only charge 40 of its 70: the dead letter keeps what the relay wrote, and a retry too.
    redis_client.xadd(USAGE_STREAMS[0], {"e": _event("req_retry", GHOST, None, 70).encode(), "charged": 40})
    assert usage_worker.ingest() == 0
    letter = dead_letters.newest(redis_client)[0][0]
    assert letter.live_charge == 40 and reconcile_worker.reconcile().as_dict()["dead_letters"] == 1
    db.session.add(Account(id=GHOST, name="restored", balance=0))  # the cause: the missing account is back
    db.session.commit()
    dead_letter_service.retry(factories.ACTOR, letter.id)
    with pytest.raises(dead_letter_service.NotFound):
        dead_letter_service.retry(factories.ACTOR, letter.id)  # a second click finds nothing to retry
    assert dead_letters.count(redis_client) == 0 and redis_client.xlen(USAGE_STREAMS[0]) == 1
    assert usage_worker.ingest() == 1
    redis_client.xadd(USAGE_STREAMS[0], {"e": _event("req_retry", GHOST, None, 70).encode(), "charged": 40})  # a replay: nothing
    assert usage_worker.ingest() == 0
    assert _charges() == 1 and ledger.sum_of_entries(GHOST) == ledger.stored_balance(GHOST) == -40
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "usage.dead_letter.retry"))
    assert audit.target_id == "req_retry" and "foreign key" in audit.before["error"].lower()


def test_a_retried_event_that_fails_again_comes_back_with_its_tries_counted(sql_app, redis_client):
    _queue(redis_client, _event("req_again", GHOST, None, 5))
    usage_worker.ingest()
    dead_letter_service.retry(factories.ACTOR, dead_letters.newest(redis_client)[0][0].id)
    usage_worker.ingest()
    letters, _ = dead_letters.newest(redis_client)
    assert [(d.event.request_id, d.attempts) for d in letters] == [("req_again", 2)]


def test_a_crash_between_the_write_and_the_acknowledgement_does_not_charge_twice(sql_app, redis_client):
    user = factories.funded_user("1")
    key, _ = factories.api_key(user)
    usage_worker.ensure_group(redis_client)
    _queue(redis_client, *[_event(f"req_crash{i}", user.account_id, key.id, 10) for i in range(5)])
    rows = redis_client.xreadgroup(USAGE_GROUP, "crashed", {USAGE_STREAMS[0]: ">"}, count=10)[0][1]
    assert usage_worker.store(usage_worker.pending(rows)).written == 5  # committed; the consumer dies before acknowledging
    # Its entries age past the takeover threshold (XCLAIM's IDLE sets their idle time, as time passing would).
    redis_client.xclaim(USAGE_STREAMS[0], USAGE_GROUP, "crashed", 0, [r[0] for r in rows], idle=usage_worker.STALE_MS + 1)
    assert usage_worker.ingest() == 0
    assert redis_client.xlen(USAGE_STREAMS[0]) == 0 and _unacknowledged(redis_client) == 0 and dead_letters.count(redis_client) == 0
    assert _charges() == 5 and ledger.sum_of_entries(user.account_id) == ledger.stored_balance(user.account_id) == 1_000_000 - 50


@pytest.mark.parametrize("url", ["sqlite:////nonexistent-dir/switchboard.db", "postgresql+psycopg://postgres@127.0.0.1:1/none"])
def test_an_unreachable_database_leaves_every_event_pending(redis_client, sqlite_app, tmp_path, url):
    from controlplane.app import create_app

    settings = replace(sqlite_app.extensions["switchboard"].settings, database_url=url, instance_dir=tmp_path)
    _queue(redis_client, _event("req_down1", 1, 1, 10), _event("req_down2", 1, 1, 10))
    with create_app(settings).app_context():
        assert usage_worker.ingest() == 0
    assert redis_client.xlen(USAGE_STREAMS[0]) == 2 and _unacknowledged(redis_client) == 2  # claimed again later
    assert dead_letters.count(redis_client) == 0


class _Receiver(Handler):
    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.fake.record(path=self.path, headers=dict(self.headers), body=self.rfile.read(length))
        self.send_json(500 if self.fake.failing else 204, b"")


def test_operators_hear_of_new_dead_letters_once(app, redis_client):
    receiver = type("Receiver", (FakeServer,), {"handler_class": _Receiver, "failing": True})()
    smtp = FakeSMTP()
    rt = runtime()
    saved = rt.settings
    try:
        rt.settings = replace(saved, alert_emails=("ops@example.com",), alert_webhook_url=receiver.origin + "/hook", webhook_secret="s3cret",
                              smtp=replace(saved.smtp, host="127.0.0.1", port=smtp.port, starttls=False))
        _queue(redis_client, _event("req_ops", GHOST, None, 5))
        usage_worker.ingest()
        assert alerts.notify_dead_letters() == 1  # the webhook failed: told again next time
        receiver.failing = False
        assert alerts.notify_dead_letters() == 1
        assert alerts.notify_dead_letters() == 0
        hook = receiver.requests[-1]
        assert hook["headers"]["X-Switchboard-Signature"] == "sha256=" + signature("s3cret", hook["headers"]["X-Switchboard-Timestamp"], hook["body"])
        sent = json.loads(hook["body"])
        assert sent["event"] == "usage.dead_lettered" and sent["data"]["newest"][0]["request_id"] == "req_ops"
        mail = smtp.messages[-1]
        assert mail["To"] == "ops@example.com" and "req_ops" in mail.get_payload(decode=True).decode()
    finally:
        rt.settings = saved
        smtp.close()
        receiver.close()


def test_a_charge_replayed_without_its_hold_never_takes_the_balance_below_zero(sql_app, redis_client):
    """Redis lost the hold (a restart without its data): the journaled settle reaches ingestion
    marked `unheld`, unchecked against any balance. It is charged as far as the balance has room
    after the batch's other charges, never below zero, and the cut is in its trace."""
    from controlplane.runtime import runtime as rt

    user = factories.funded_user("0.001")  # 1,000 µ$
    key, _ = factories.api_key(user)
    held = _event("req_held", user.account_id, key.id, 300)
    first, second = (_event(f"req_unheld{i}", user.account_id, key.id, 500) for i in range(2))
    rt().quota.credit(user.account_id, -300, ledger.stored_balance(user.account_id))  # the held one's settle moved it already
    redis_client.xadd(USAGE_STREAMS[0], {"e": held.encode()})
    for e in (first, second):
        redis_client.xadd(USAGE_STREAMS[0], {"e": e.encode(), "unheld": "1"})
    assert usage_worker.ingest() == 3
    costs = dict(db.session.execute(select(RequestLog.request_id, RequestLog.cost)).all())
    assert costs == {"req_held": 300, "req_unheld0": 500, "req_unheld1": 200}
    assert ledger.stored_balance(user.account_id) == 0 == ledger.sum_of_entries(user.account_id)
    assert rt().quota.account(user.account_id)[0] == 0
    cut = db.session.scalar(select(RequestLog).where(RequestLog.request_id == "req_unheld1"))
    assert {"step": "charge_cut", "cost": 500, "charged": 200} in cut.trace
