"""What operators do with usage events ingestion could not write: retry one (it goes back to the
usage stream and is written within seconds, or comes back here with the new error) or discard it.

The relay charged a dead letter's cost to the live balance when the request finished, but SQL never
did; discarding it gives that back to the live balance so the customer pays nothing for the request,
and the audit entry keeps what the event said.
"""
from __future__ import annotations

from controlplane import dead_letters
from controlplane.dead_letters import DeadLetter
from controlplane.extensions import db
from controlplane.models import Account
from controlplane.runtime import runtime
from controlplane.services.base import Actor, NotFound, audit, commit
from controlplane.services.billing import apply_live


def letter(entry_id: str) -> DeadLetter:
    found = dead_letters.get(runtime().redis, entry_id)
    if found is None:
        raise NotFound(f"dead letter {entry_id}")
    return found


def _record(letter_: DeadLetter) -> dict:
    facts = letter_.as_dict()
    facts.pop("event")
    return facts


def _live_charge(found: DeadLetter) -> int:
    """What discarding gives back: the relay's live charge, if the account still exists."""
    if not found.live_charge or db.session.get(Account, found.event.account_id) is None:
        return 0
    return found.live_charge


def retry(actor: Actor, entry_id: str) -> DeadLetter:
    """Re-queue the event; ingestion writes it once (a request already in SQL is not written again)."""
    found = letter(entry_id)
    if not dead_letters.requeue(runtime().redis, entry_id):
        raise NotFound(f"dead letter {entry_id}")  # retried or discarded by someone else meanwhile
    audit(actor, "usage.dead_letter.retry", "usage_event", found.as_dict()["request_id"] or entry_id, before=_record(found))
    commit(publish=False)
    return found


def discard(actor: Actor, entry_id: str) -> DeadLetter:
    """Drop the event for good and give its charge back to the live balance."""
    found = letter(entry_id)
    if not dead_letters.remove(runtime().redis, entry_id):
        raise NotFound(f"dead letter {entry_id}")
    refund = _live_charge(found)
    audit(actor, "usage.dead_letter.discard", "usage_event", found.as_dict()["request_id"] or entry_id, before=_record(found),
          after={"live_balance_credit_micro_usd": refund})
    commit(publish=False)
    if refund:
        apply_live(found.event.account_id, refund)
    return found


__all__ = ["discard", "letter", "retry"]
