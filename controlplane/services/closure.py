"""Closing a person's account, by the person (after signing in again) or by an operator; and an
operator closing an organisation.

At once: every API key of theirs is revoked (the relays drop the records within seconds), every
session ends, they leave the organisations they were in, and what identifies them is replaced (email,
password, two-factor secret, the account's name, alert webhook, session devices and addresses). The
ledger, request logs and audit trail stay, under the user and account ids, as the terms require.

The unused balance is never zeroed here: money leaves an account only through a ledger entry. It
stays on the closed account, recorded in the closure's audit entry together with the top-ups still
inside the refund window, and `request_refund_of_unused` is the one place a refund request for them
is created (to the card, for card top-ups: services/card_refunds.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, update

from controlplane.extensions import db
from controlplane.models import (
    Account,
    AccountKind,
    AlertSetting,
    ApiKey,
    EntryKind,
    Invitation,
    KeyStatus,
    LedgerEntry,
    MemberRole,
    Membership,
    RecoveryCode,
    Refund,
    RefundRequest,
    User,
    UserSession,
    UserStatus,
    utcnow,
)
from controlplane.services import card_refunds
from controlplane.services.base import Actor, ServiceError, audit, commit

log = logging.getLogger(__name__)
CLOSED_DOMAIN = "closed.invalid"  # RFC 2606: never delivered, never anyone's address


@dataclass(frozen=True)
class RefundableTopup:
    """A top-up still inside the refund window, and how much of it is unused."""

    entry_id: int
    created_at: datetime
    unused: int


@dataclass(frozen=True)
class ClosurePlan:
    """What closing would do: shown before the person (or operator) confirms, and what was done."""

    user_id: int | None  # None: an organisation
    account_id: int
    balance: int  # µ$ spendable now (open holds deducted)
    refundable: list[RefundableTopup] = field(default_factory=list)
    keys: int = 0
    organisations: list[str] = field(default_factory=list)  # names of the organisations a person leaves
    members: list[str] = field(default_factory=list)  # an organisation's members, who leave it

    @property
    def refundable_total(self) -> int:
        return sum(t.unused for t in self.refundable)


def _blocking_organisations(user: User) -> list[str]:
    """Organisations this person is the last owner of, while others are members: closing would
    leave them without anyone who may manage them."""
    owned = db.session.scalars(select(Membership.account_id).where(Membership.user_id == user.id, Membership.role == MemberRole.OWNER.value))
    blocking = []
    for account_id in owned:
        owners = db.session.scalar(select(func.count()).select_from(Membership).where(
            Membership.account_id == account_id, Membership.role == MemberRole.OWNER.value))
        others = db.session.scalar(select(func.count()).select_from(Membership).where(
            Membership.account_id == account_id, Membership.user_id != user.id))
        if owners == 1 and others:
            blocking.append(db.session.get(Account, account_id).name)
    return blocking


def plan(user: User, now: datetime | None = None) -> ClosurePlan:
    """What closing `user`'s account would do; refuses what may not be closed."""
    from controlplane.services import refunds

    if user.status == UserStatus.CLOSED.value:
        raise ServiceError("This account is closed already.", status=409)
    if user.is_operator:
        raise ServiceError("Operator accounts are not closed here: an admin changes their role to user first.", status=409)
    blocking = _blocking_organisations(user)
    if blocking:
        raise ServiceError(f"You are the last owner of {', '.join(blocking)}: make another member owner first.", status=409)
    account = user.account
    refundable = []
    topups = db.session.scalars(select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == EntryKind.TOPUP.value,
                                                          LedgerEntry.id.not_in(select(Refund.topup_entry_id).where(Refund.topup_entry_id.is_not(None))))
                                .order_by(LedgerEntry.id))
    for entry in topups:
        terms = refunds.topup_refund(entry.id, now)
        if not terms.late and terms.unused > 0:
            refundable.append(RefundableTopup(entry.id, entry.created_at, terms.unused))
    keys = db.session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user.id, ApiKey.status != KeyStatus.DELETED.value))
    names = list(db.session.scalars(select(Account.name).join(Membership, Membership.account_id == Account.id)
                                    .where(Membership.user_id == user.id).order_by(Account.name)))
    return ClosurePlan(user.id, account.id, max(0, refunds.available_balance(account)), refundable, keys or 0, names)


def request_refund_of_unused(actor: Actor, account: Account, closure: ClosurePlan) -> list[RefundRequest]:
    """The one call point for refunding a closed account's unused balance: a refund request to the
    card for every card top-up the terms would refund now (inside 14 days, something unused, not
    asked for already), for operators to approve in the refund queue. Nothing here moves money;
    what no request covers (operator top-ups, redeemed codes) stays on the closed account, recorded
    in the closure's audit entry, for operators to refund from the Refunds page."""
    made = card_refunds.request_refunds_for_closure(account.id)
    if closure.refundable and not made:
        log.info("account %s closed with %d µ$ unused in %d top-up(s), none of them refundable to a card",
                 account.id, closure.refundable_total, len(closure.refundable))
    return made


def close(actor: Actor, user: User, reason: str | None = None) -> ClosurePlan:
    """Close the account now (the caller has re-authenticated the person, or is an operator)."""
    done = plan(user)
    account = user.account
    now = utcnow()
    revoked = db.session.scalars(select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.status != KeyStatus.DELETED.value)).all()
    for key in revoked:  # row by row: the flush marks each key record for removal from Redis
        key.status = KeyStatus.DELETED.value
    for membership in db.session.scalars(select(Membership).where(Membership.user_id == user.id)).all():
        db.session.delete(membership)
    old_email = user.email
    user.email = f"closed-{user.id}@{CLOSED_DOMAIN}"
    user.password_hash = None
    user.totp_secret, user.totp_enabled_at, user.totp_last_step = None, None, None
    user.status = UserStatus.CLOSED.value
    user.session_version += 1
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.session.execute(update(UserSession).where(UserSession.user_id == user.id)
                       .values(revoked_at=func.coalesce(UserSession.revoked_at, now), ip=None, user_agent=None))
    db.session.execute(update(Invitation).where(Invitation.email == old_email)
                       .values(email=user.email, revoked_at=func.coalesce(Invitation.revoked_at, now)))
    if account.kind == AccountKind.PERSONAL.value:
        account.name = f"Closed account {account.id}"
        account.closed_at = now
        db.session.execute(update(AlertSetting).where(AlertSetting.account_id == account.id).values(webhook_url=None, email=False))
    audit(actor, "account.close", "user", user.id, after={
        "account_id": account.id, "reason": (reason or "").strip()[:500] or None, "keys_revoked": len(revoked),
        "left_organisations": done.organisations, "unused_balance_micro_usd": done.balance,
        "refundable_topups": [{"entry_id": t.entry_id, "unused_micro_usd": t.unused} for t in done.refundable],
    })
    commit()
    request_refund_of_unused(actor, account, done)
    return done


def plan_organisation(account: Account, now: datetime | None = None) -> ClosurePlan:
    """What closing an organisation would do (its name is not personal data and stays)."""
    from controlplane.services import refunds

    if account.kind != AccountKind.ORGANISATION.value:
        raise ServiceError("This is a personal account: close it through its user.", status=409)
    if account.closed_at is not None:
        raise ServiceError("This organisation is closed already.", status=409)
    refundable = []
    for entry in db.session.scalars(select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == EntryKind.TOPUP.value)
                                    .order_by(LedgerEntry.id)):
        terms = refunds.topup_refund(entry.id, now)
        if terms.previous is None and not terms.late and terms.unused > 0:
            refundable.append(RefundableTopup(entry.id, entry.created_at, terms.unused))
    keys = db.session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.account_id == account.id, ApiKey.status != KeyStatus.DELETED.value))
    members = list(db.session.scalars(select(User.email).join(Membership, Membership.user_id == User.id).where(Membership.account_id == account.id)))
    return ClosurePlan(None, account.id, max(0, refunds.available_balance(account)), refundable, keys or 0, members=members)


def close_organisation(actor: Actor, account: Account, reason: str) -> ClosurePlan:
    """An operator closes an organisation: its keys are revoked at once, its members leave, its open
    invitations end; the ledger, request metadata and the unused balance stay (as for a person)."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why the organisation is closed.", "reason")
    done = plan_organisation(account)
    now = utcnow()
    revoked = db.session.scalars(select(ApiKey).where(ApiKey.account_id == account.id, ApiKey.status != KeyStatus.DELETED.value)).all()
    for key in revoked:
        key.status = KeyStatus.DELETED.value
    for membership in db.session.scalars(select(Membership).where(Membership.account_id == account.id)).all():
        db.session.delete(membership)
    db.session.execute(update(Invitation).where(Invitation.account_id == account.id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
                       .values(revoked_at=now))
    db.session.execute(update(AlertSetting).where(AlertSetting.account_id == account.id).values(webhook_url=None, email=False))
    account.closed_at = now
    audit(actor, "organisation.close", "account", account.id, after={
        "reason": reason[:500], "keys_revoked": len(revoked), "members_removed": len(done.members),
        "unused_balance_micro_usd": done.balance,
        "refundable_topups": [{"entry_id": t.entry_id, "unused_micro_usd": t.unused} for t in done.refundable],
    })
    commit()
    request_refund_of_unused(actor, account, done)
    return done
