"""Reconciliation: prove that the ledger, the SQL balances and the live Redis balances agree.

The ledger is the truth. An account's stored SQL balance must equal the sum of its entries; its live
Redis balance must equal the SQL balance minus the charges still waiting in the usage streams; a key's
stored `spent` must equal its charges minus its refunds. `fix=True` repairs from the ledger.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select, update

from controlplane import dead_letters
from controlplane.extensions import db
from controlplane.models import Account, ApiKey, EntryKind, LedgerEntry
from controlplane.runtime import runtime
from relay.quota import account_key
from relay.redis_keys import HOLDS_INDEXES
from relay.usage import USAGE_STREAMS, UsageEvent
from workers import usage
from workers.context import in_app_context

# Sets the live balance to what SQL and the pending stream imply, unless a settle moved it meanwhile.
_SET_IF_UNCHANGED = """
local seen = redis.call('HGET', KEYS[1], 'bal')
if (seen or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'bal', ARGV[2])
return 1
"""


@dataclass
class Finding:
    what: str  # account_balance | live_balance | key_spent
    subject: int
    expected: int
    found: int | None
    fixed: bool = False


# Ingestion drains the streams every second; an event this old means it is not keeping up or stopped.
BACKLOG_STUCK_SECONDS = 60


@dataclass
class Report:
    accounts: int = 0
    findings: list[Finding] = field(default_factory=list)
    backlog: int = 0  # usage events not yet written to SQL
    backlog_age_s: float = 0.0  # age of the oldest of them
    stale_holds: int = 0  # holds past their request's deadline and margin (a relay died; the sweeper's)
    dead_letters: int = 0  # usage events ingestion could not write (controlplane/dead_letters.py)

    @property
    def consistent(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {"accounts": self.accounts, "consistent": self.consistent, "backlog": self.backlog,
                "backlog_age_s": round(self.backlog_age_s, 1), "stale_holds": self.stale_holds, "dead_letters": self.dead_letters,
                "findings": [f.__dict__ for f in self.findings]}


def _oldest_entry_ms(redis) -> int | None:
    """When the oldest event of any usage stream was appended (ms), None when none waits."""
    oldest = None
    for stream in USAGE_STREAMS:
        first = redis.xrange(stream, count=1)
        if first:
            entry_id = first[0][0].decode() if isinstance(first[0][0], bytes) else first[0][0]
            appended = int(entry_id.split("-")[0])
            oldest = appended if oldest is None else min(oldest, appended)
    return oldest


def _backlog_and_holds(report: Report, now: float) -> None:
    """What is waiting: the usage streams' unwritten events (stuck ingestion holds charges out of SQL)
    and holds that outlived their requests. Either one needs attention."""
    redis = runtime().redis
    report.backlog = usage.backlog()
    oldest = _oldest_entry_ms(redis)
    if oldest is not None:
        report.backlog_age_s = max(0.0, now - oldest / 1000)
    if report.backlog_age_s > BACKLOG_STUCK_SECONDS:
        report.findings.append(Finding("usage_backlog", 0, 0, report.backlog))
    report.dead_letters = dead_letters.count(redis)
    if report.dead_letters:  # charged live, not in SQL, until an operator retries or discards them
        report.findings.append(Finding("dead_letters", 0, 0, report.dead_letters))
    report.stale_holds = sum(int(redis.zcount(index, "-inf", now)) for index in HOLDS_INDEXES)
    if report.stale_holds:
        report.findings.append(Finding("stale_holds", 0, 0, report.stale_holds))


def _waiting_events(redis):
    """The fields of every entry of every usage stream."""
    for stream in USAGE_STREAMS:
        for _, fields in redis.xrange(stream):
            yield fields


def pending_charges(redis) -> dict[int, int]:
    """Charges settled in Redis but not yet written to SQL, per account: the usage streams' and the
    dead letters' (an operator retries or discards those), each request once."""
    pending: dict[int, int] = defaultdict(int)
    counted: set[str] = set()
    for fields in _waiting_events(redis):
        if fields.get(b"e") is None:
            continue
        try:
            event = UsageEvent.from_stream(fields)
        except Exception:  # noqa: BLE001, S112  # ingestion dead-letters it; its charge is counted then  # nosec B112
            continue
        if event.unheld or event.request_id in counted:  # unheld: not applied to the live balance yet (ingestion does that)
            continue
        counted.add(event.request_id)
        if isinstance(event.account_id, int) and isinstance(event.cost, int) and event.cost > 0:
            pending[event.account_id] += event.cost
    for account_id, charge in dead_letters.charges(redis, counted).items():
        pending[account_id] += charge
    return pending


def _sql_balances(report: Report, fix: bool) -> dict[int, int]:
    sums = dict(db.session.execute(select(LedgerEntry.account_id, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.account_id)).all())
    balances = {}
    for account_id, stored in db.session.execute(select(Account.id, Account.balance)).all():
        truth = int(sums.get(account_id) or 0)
        balances[account_id] = truth
        if stored != truth:
            finding = Finding("account_balance", account_id, truth, stored)
            if fix:
                db.session.execute(update(Account).where(Account.id == account_id).values(balance=truth))
                finding.fixed = True
            report.findings.append(finding)
    report.accounts = len(balances)
    return balances


def _key_spent(report: Report, fix: bool) -> None:
    charged = dict(db.session.execute(
        select(LedgerEntry.api_key_id, -func.sum(LedgerEntry.amount))
        .where(LedgerEntry.api_key_id.is_not(None), LedgerEntry.kind.in_([str(EntryKind.CHARGE), str(EntryKind.REFUND)]))
        .group_by(LedgerEntry.api_key_id)).all())
    for key_id, stored in db.session.execute(select(ApiKey.id, ApiKey.spent)).all():
        truth = int(charged.get(key_id) or 0)
        if stored != truth:
            finding = Finding("key_spent", key_id, truth, stored)
            if fix:
                db.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(spent=truth))
                finding.fixed = True
            report.findings.append(finding)


def _live_balances(report: Report, balances: dict[int, int], fix: bool) -> None:
    redis = runtime().redis
    pending = pending_charges(redis)
    setter = redis.register_script(_SET_IF_UNCHANGED)
    for account_id, truth in balances.items():
        raw = redis.hget(account_key(account_id), "bal")
        expected = truth - pending.get(account_id, 0)
        found = None if raw is None else int(raw)
        if found == expected:
            continue
        finding = Finding("live_balance", account_id, expected, found)
        if fix:
            finding.fixed = bool(setter(keys=[account_key(account_id)], args=[raw.decode() if raw else "", expected]))
        report.findings.append(finding)


@in_app_context
def reconcile(fix: bool = False) -> Report:
    report = Report()
    balances = _sql_balances(report, fix)
    _key_spent(report, fix)
    db.session.commit()
    _live_balances(report, balances, fix)
    _backlog_and_holds(report, time.time())
    return report
