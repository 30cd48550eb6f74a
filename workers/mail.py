"""Emails people ask for by acting: receipts for money added (top-ups, redeemed codes) and
organisation invitations. Jobs take ids, are idempotent (a marker in Redis), and raise on a failed
delivery so RQ retries them."""
from __future__ import annotations

import logging

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Account, AccountKind, Invitation, LedgerEntry, MemberRole, Membership, User
from controlplane.notify import send_email
from controlplane.runtime import runtime
from relay.pricing import micro_to_usd
from workers.context import in_app_context

log = logging.getLogger(__name__)
MARK_TTL = 30 * 86_400


class DeliveryFailed(RuntimeError):
    """Raised so the job is retried."""


def account_recipients(account_id: int) -> list[str]:
    """Who hears about an account's money: its person, or an organisation's owners and admins."""
    account = db.session.get(Account, account_id)
    if account is None:
        return []
    if account.kind != AccountKind.ORGANISATION.value:
        return list(db.session.scalars(select(User.email).where(User.account_id == account_id)))
    return list(db.session.scalars(select(User.email).join(Membership, Membership.user_id == User.id).where(
        Membership.account_id == account_id, Membership.role.in_([MemberRole.OWNER.value, MemberRole.ADMIN.value]))))


def _once(marker: str) -> bool:
    return bool(runtime().redis.set(marker, 1, nx=True, ex=MARK_TTL))


def receipt_text(entry: LedgerEntry, account: Account, public_url: str) -> str:
    what = "Redeemed code" if entry.kind == "redemption" else "Top-up"
    return "\n".join([
        f"Receipt R-{entry.id:08d}",
        f"Date: {entry.created_at:%Y-%m-%d %H:%M} UTC",
        f"Account: {account.name}",
        f"{what}: {micro_to_usd(entry.amount, 2)} ({micro_to_usd(entry.amount)})",
        f"Note: {entry.reason or '—'}",
        "",
        f"View it online: {public_url.rstrip('/')}/billing/receipts/{entry.id}",
    ])


@in_app_context
def send_receipt(entry_id: int) -> int:
    """Email the receipt for a top-up or redemption; returns how many addresses it reached."""
    marker = f"sb:mail:receipt:{entry_id}"
    if not _once(marker):
        return 0
    entry = db.session.get(LedgerEntry, entry_id)
    if entry is None or entry.amount <= 0:
        return 0
    rt = runtime()
    account = db.session.get(Account, entry.account_id)
    text = receipt_text(entry, account, rt.settings.public_url)
    sent = 0
    for address in account_recipients(entry.account_id):
        result = send_email(rt.settings.smtp, address, f"Receipt R-{entry.id:08d}: {micro_to_usd(entry.amount, 2)} added", text)
        if not result.ok:
            rt.redis.delete(marker)
            raise DeliveryFailed(f"receipt {entry_id} to {address}: {result.detail}")
        sent += 1
    return sent


@in_app_context
def send_invitation(invitation_id: int, link: str) -> bool:
    if not _once(f"sb:mail:invitation:{invitation_id}"):
        return False
    row = db.session.get(Invitation, invitation_id)
    if row is None or row.email is None or row.accepted_at is not None or row.revoked_at is not None:
        return False
    inviter = db.session.get(User, row.created_by) if row.created_by else None
    name = row.account.name if row.account else "Switchboard"
    body = (f"{inviter.email if inviter else 'Someone'} invited you to join {name} on Switchboard as {row.role}.\n\n"
            f"Accept: {link}\n\nThe link works once and expires on {row.expires_at:%Y-%m-%d}.")
    result = send_email(runtime().settings.smtp, row.email, f"Join {name} on Switchboard", body)
    if not result.ok:
        runtime().redis.delete(f"sb:mail:invitation:{invitation_id}")
        raise DeliveryFailed(f"invitation {invitation_id}: {result.detail}")
    return True
