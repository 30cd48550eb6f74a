"""The only writer of ledger entries. Every balance change is an entry; the account's stored
balance is a cache of their sum, updated in the same transaction (the caller commits)."""
from __future__ import annotations

import time

from sqlalchemy import bindparam, func, select, update

from controlplane.bulk import BulkInsert, utc_text
from controlplane.extensions import db
from controlplane.models import Account, EntryKind, LedgerEntry


def post(
    account_id: int,
    kind: EntryKind,
    amount: int,
    *,
    request_id: str | None = None,
    operator_id: int | None = None,
    api_key_id: int | None = None,
    reference_id: int | None = None,
    reason: str | None = None,
) -> LedgerEntry:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError("ledger amounts are integer micro-dollars")
    entry = LedgerEntry(
        account_id=account_id,
        kind=str(kind),
        amount=amount,
        request_id=request_id,
        operator_id=operator_id,
        api_key_id=api_key_id,
        reference_id=reference_id,
        reason=reason,
    )
    db.session.add(entry)
    db.session.execute(update(Account).where(Account.id == account_id).values(balance=Account.balance + amount))
    return entry


_CHARGES = BulkInsert(LedgerEntry.__table__, ("account_id", "kind", "amount", "request_id", "api_key_id", "created_at"))
_ACCOUNTS = Account.__table__
_ADD_TO_BALANCE = (update(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("account"))
                   .values(balance=_ACCOUNTS.c.balance + bindparam("delta", type_=_ACCOUNTS.c.balance.type)))


def post_charges(charges: list[tuple[int, int, str, int | None]]) -> None:
    """Charge entries for many requests at once: (account_id, amount µ$, request_id, api_key_id).

    Two statements whatever the batch size (the entries by the driver's bulk route, one UPDATE per
    account run as one executemany) keep ingestion cheap under load.
    """
    rows, deltas = [], {}
    now = utc_text(time.time())
    charge = str(EntryKind.CHARGE)
    for account_id, amount, request_id, api_key_id in charges:
        if amount <= 0:
            continue
        rows.append((account_id, charge, -amount, request_id, api_key_id, now))
        deltas[account_id] = deltas.get(account_id, 0) - amount
    if rows:
        _CHARGES.run(rows)
        db.session.execute(_ADD_TO_BALANCE, [{"account": account_id, "delta": delta} for account_id, delta in deltas.items()])


def open_accounts(accounts: list[dict], credit: int, reason: str) -> list[int]:
    """Many new accounts at once (Core bulk inserts), each opened with a `credit` µ$ top-up entry and
    that balance: the sum of entries and the stored balance agree from the first row. Returns the
    new ids in the order given. The caller commits."""
    from controlplane.bulk_sql import insert_rows

    if not isinstance(credit, int) or isinstance(credit, bool) or credit < 0:
        raise TypeError("ledger amounts are integer micro-dollars")
    ids = insert_rows(Account.__table__, [{**a, "balance": credit} for a in accounts])
    if credit:
        insert_rows(LedgerEntry.__table__, [{"account_id": i, "kind": str(EntryKind.TOPUP), "amount": credit, "reason": reason} for i in ids])
    return ids


def sum_of_entries(account_id: int) -> int:
    return int(db.session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.account_id == account_id)))


def stored_balance(account_id: int) -> int:
    return int(db.session.scalar(select(Account.balance).where(Account.id == account_id)))
