"""The ledger on both SQL back ends: every change an entry, balances are sums, a request is
charged once."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import AuditEntry, EntryKind, LedgerEntry
from controlplane.services import ServiceError, billing
from relay.usage import UsageEvent
from tests import factories
from workers import usage as usage_worker


def test_topup_is_a_ledger_entry_and_moves_sql_and_live_balances(sql_app):
    user = factories.user()
    entry = billing.topup(factories.ACTOR, user.account, "12.345678", "bank transfer 42")
    assert entry.amount == 12_345_678 and entry.kind == "topup"
    assert ledger.stored_balance(user.account_id) == ledger.sum_of_entries(user.account_id) == 12_345_678
    assert billing.live_balance(user.account_id) == (12_345_678, 0)
    audit = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "ledger.topup")).all()
    assert len(audit) == 1 and audit[0].after["amount_micro_usd"] == 12_345_678


@pytest.mark.parametrize("amount", ["0", "-1", "abc", "0.0000001"])
def test_invalid_topups_change_nothing(sql_app, amount):
    user = factories.user()
    with pytest.raises(ServiceError):
        billing.topup(factories.ACTOR, user.account, amount, "x")
    assert db.session.scalar(select(LedgerEntry.id)) is None
    assert billing.live_balance(user.account_id) == (0, 0)


def test_a_request_can_be_charged_only_once(sql_app):
    user = factories.funded_user("1")
    ledger.post(user.account_id, EntryKind.CHARGE, -10, request_id="req_same")
    db.session.commit()
    with pytest.raises(IntegrityError):
        ledger.post(user.account_id, EntryKind.CHARGE, -10, request_id="req_same")
        db.session.commit()
    db.session.rollback()
    assert ledger.sum_of_entries(user.account_id) == 1_000_000 - 10


def _event(rid: str, account_id: int, key_id: int, cost: int) -> UsageEvent:
    return UsageEvent(request_id=rid, started_at=1.7e9, finished_at=1.7e9 + 1, endpoint="/v1/chat/completions", status=200,
                      api_key_id=key_id, account_id=account_id, model="gpt-4o-mini", input_tokens=10, output_tokens=5, cost=cost)


def _write(events: list[UsageEvent]) -> int:
    """One batch through ingestion's write path, as stream entries."""
    return usage_worker.store([usage_worker.Pending(f"1-{i}".encode(), {b"e": e.encode()}) for i, e in enumerate(events)]).written


def test_ingestion_is_idempotent_on_the_request_id(sql_app):
    user = factories.funded_user("1")
    key, _ = factories.api_key(user)
    events = [_event(f"req_{i}", user.account_id, key.id, 100) for i in range(5)]
    assert _write(events + events[:2]) == 5
    assert _write(events) == 0  # a replay writes nothing
    assert ledger.sum_of_entries(user.account_id) == ledger.stored_balance(user.account_id) == 1_000_000 - 500
    db.session.refresh(key)
    assert key.spent == 500 and key.last_used_at is not None


def test_stream_ingestion_survives_replays_and_acknowledges(sql_app, redis_client):
    from relay.usage import USAGE_STREAMS

    user = factories.funded_user("1")
    key, _ = factories.api_key(user)
    for i in range(3):
        redis_client.xadd(USAGE_STREAMS[0], {"e": _event(f"req_s{i}", user.account_id, key.id, 7).encode()})
    redis_client.xadd(USAGE_STREAMS[0], {"e": _event("req_s0", user.account_id, key.id, 7).encode()})  # a duplicate
    assert usage_worker.ingest() == 3
    assert redis_client.xlen(USAGE_STREAMS[0]) == 0
    assert ledger.sum_of_entries(user.account_id) == 1_000_000 - 21


def test_concurrent_ingestion_of_the_same_events_charges_once(sql_app, redis_client):
    """Two workers racing over one batch: the unique constraints hold, the money is right."""
    user = factories.funded_user("1")
    key, _ = factories.api_key(user)
    events = [_event(f"req_c{i}", user.account_id, key.id, 3) for i in range(40)]
    app = sql_app
    errors = []

    def run():
        try:
            with app.app_context():
                _write(events)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    db.session.expire_all()
    assert db.session.scalar(select(db.func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "charge")) == 40
    assert ledger.sum_of_entries(user.account_id) == ledger.stored_balance(user.account_id) == 1_000_000 - 120


def test_ingestion_folds_events_into_hourly_rollups(sql_app):
    from controlplane import rollups
    from controlplane.models import UsageRollup

    user = factories.funded_user("1")
    key, _ = factories.api_key(user)
    first = [_event(f"req_r{i}", user.account_id, key.id, 10) for i in range(3)]
    for i, e in enumerate(first):
        e.latency_ms, e.ttft_ms = 100 * (i + 1), 40
    failed = _event("req_rf", user.account_id, key.id, 0)
    failed.status = 502
    _write(first)
    _write([failed])
    row = db.session.scalar(select(UsageRollup))
    assert (row.requests, row.errors, row.cost, row.input_tokens, row.output_tokens) == (4, 1, 30, 40, 20)
    assert rollups.percentile(row.latency_hist, 0.5) == 200
    assert rollups.percentile(row.ttft_hist, 0.95) == 50
    assert db.session.scalar(select(db.func.count()).select_from(UsageRollup)) == 1
