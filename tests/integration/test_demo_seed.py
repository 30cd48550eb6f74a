"""The demo seed writes a consistent world: ledger and balances agree, rollups match the logs,
channels of several states exist, and margin is computable."""
from __future__ import annotations

from sqlalchemy import func, select

from controlplane import ledger
from controlplane.cli.demo import seed
from controlplane.extensions import db
from controlplane.models import Account, Ban, Channel, ChannelRollup, ModelPrice, Refund, RequestLog, UsageRollup, utcnow


def test_the_seed_is_consistent(app):
    result = seed(days=1, per_hour=6)
    assert result["requests"] == db.session.scalar(select(func.count()).select_from(RequestLog)) > 20
    for account_id in db.session.scalars(select(Account.id)):
        assert ledger.stored_balance(account_id) == ledger.sum_of_entries(account_id) >= 0
    logged = db.session.scalar(select(func.count()).select_from(RequestLog))
    assert db.session.scalar(select(func.sum(UsageRollup.requests))) == db.session.scalar(select(func.sum(ChannelRollup.requests))) == logged
    assert db.session.scalar(select(func.sum(ChannelRollup.upstream_cost))) > 0
    assert {s for s in db.session.scalars(select(Channel.status))} == {"enabled", "disabled", "auto_disabled"}
    assert db.session.scalar(select(func.count()).select_from(ModelPrice).where(ModelPrice.effective_from > utcnow())) == 1
    assert db.session.scalar(select(func.count()).select_from(Refund)) == 2
    assert db.session.scalar(select(func.count()).select_from(Ban)) == 3
