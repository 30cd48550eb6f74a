"""Emails people ask for by acting: receipts for money added (top-ups, redeemed codes), invoices
for card top-ups and the decisions on card refunds, organisation invitations, and operators'
alerts of disputed card payments. Jobs take ids, are idempotent (a marker in Redis), and raise on a
failed delivery so RQ retries them."""
from __future__ import annotations

import logging

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Account, AccountKind, Invitation, Invoice, LedgerEntry, MemberRole, Membership, Payment, RefundRequest, User
from controlplane.notify import send_email
from controlplane.runtime import runtime
from relay import redis_keys
from relay.pricing import micro_to_usd, usd_text
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


def _send_all(addresses: list[str], marker: str, subject: str, text: str, what: str) -> int:
    """Send to each address; a failed delivery clears the sent-once mark (so a retry sends again) and
    raises. Returns how many addresses it reached."""
    rt = runtime()
    for address in addresses:
        result = send_email(rt.settings.smtp, address, subject, text)
        if not result.ok:
            rt.redis.delete(marker)
            raise DeliveryFailed(f"{what} to {address}: {result.detail}")
    return len(addresses)


def receipt_text(entry: LedgerEntry, account: Account, public_url: str) -> str:
    what = "Redeemed code" if entry.kind == "redemption" else "Top-up"
    return "\n".join([
        f"Receipt R-{entry.id:08d}",
        f"Date: {entry.created_at:%Y-%m-%d %H:%M} UTC",
        f"Account: {account.name}",
        f"{what}: {usd_text(entry.amount)} ({micro_to_usd(entry.amount)})",
        f"Note: {entry.reason or '—'}",
        "",
        f"View it online: {public_url.rstrip('/')}/billing/receipts/{entry.id}",
    ])


@in_app_context
def send_receipt(entry_id: int) -> int:
    """Email the receipt for a top-up or redemption; returns how many addresses it reached."""
    marker = redis_keys.receipt_mark_key(entry_id)
    if not _once(marker):
        return 0
    entry = db.session.get(LedgerEntry, entry_id)
    if entry is None or entry.amount <= 0:
        return 0
    rt = runtime()
    account = db.session.get(Account, entry.account_id)
    text = receipt_text(entry, account, rt.settings.public_url)
    return _send_all(account_recipients(entry.account_id), marker, f"Receipt R-{entry.id:08d}: {usd_text(entry.amount)} added", text,
                     f"receipt {entry_id}")


@in_app_context
def send_invitation(invitation_id: int, link: str) -> bool:
    if not _once(redis_keys.invitation_mark_key(invitation_id)):
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
        runtime().redis.delete(redis_keys.invitation_mark_key(invitation_id))
        raise DeliveryFailed(f"invitation {invitation_id}: {result.detail}")
    return True


def invoice_text(invoice: Invoice, public_url: str) -> str:
    seller, buyer = invoice.seller or {}, invoice.buyer or {}
    return "\n".join([
        f"Invoice {invoice.code}",
        f"Date: {invoice.issued_at:%Y-%m-%d %H:%M} UTC",
        f"From: {seller.get('name') or 'Switchboard'}" + (f", tax id {seller['tax_id']}" if seller.get("tax_id") else ""),
        f"To: {buyer.get('name') or '—'}" + (f", tax id {buyer['tax_id']}" if buyer.get("tax_id") else ""),
        f"Prepaid credit: {usd_text(invoice.amount)} ({micro_to_usd(invoice.amount)})",
        f"Paid by {invoice.payment_method} through Stripe ({invoice.payment_intent_id or invoice.checkout_session_id})",
        "",
        f"View or download it: {public_url.rstrip('/')}/billing/invoices/{invoice.id}",
    ])


@in_app_context
def send_invoice(invoice_id: int) -> int:
    """Email a card top-up's invoice to whoever hears about the account's money."""
    marker = redis_keys.invoice_mark_key(invoice_id)
    if not _once(marker):
        return 0
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None:
        return 0
    rt = runtime()
    text = invoice_text(invoice, rt.settings.public_url)
    return _send_all(account_recipients(invoice.account_id), marker, f"Invoice {invoice.code}: {usd_text(invoice.amount)} added", text,
                     f"invoice {invoice_id}")


@in_app_context
def send_refund_decision(request_id: int) -> int:
    """Tell whoever hears about the account's money how their card refund request was decided."""
    marker = redis_keys.refund_decision_mark_key(request_id)
    if not _once(marker):
        return 0
    row = db.session.get(RefundRequest, request_id)
    if row is None or row.status == "pending":
        return 0
    rt = runtime()
    paid = f"{usd_text(row.payment.amount)} card payment of {row.payment.created_at:%Y-%m-%d}"
    if row.status == "approved":
        subject = f"Refund approved: {usd_text(row.amount or 0)} back to your card"
        text = (f"{usd_text(row.amount or 0)} of your {paid} is refunded to the card you paid with "
                f"(Stripe refund {row.stripe_refund_id}). Banks take 5 to 10 days to show it.")
    else:
        subject = "Refund request declined"
        text = f"Your request to refund the {paid} was declined: {row.decision_note}"
    text += f"\n\nCard payments: {rt.settings.public_url.rstrip('/')}/billing/payments"
    return _send_all(account_recipients(row.account_id), marker, subject, text, f"refund decision {request_id}")


@in_app_context
def send_payment_alert(payment_id: int) -> int:
    """Tell the operators' alert addresses that a card payment is disputed."""
    marker = redis_keys.payment_alert_mark_key(payment_id)
    rt = runtime()
    if not rt.settings.alert_emails or not _once(marker):
        return 0
    payment = db.session.get(Payment, payment_id)
    if payment is None:
        return 0
    account = db.session.get(Account, payment.account_id)
    text = "\n".join([
        f"A card payment of {usd_text(payment.amount)} by {account.name} (account {account.id}) is disputed with the card issuer.",
        f"Dispute: {payment.dispute_id}; payment intent: {payment.payment_intent_id}",
        f"Held back from the balance: {usd_text(payment.disputed_amount)}. The account is flagged.",
        "",
        f"Payments: {rt.settings.public_url.rstrip('/')}/admin/payments/?flagged=1",
    ])
    return _send_all(list(rt.settings.alert_emails), marker, f"Disputed card payment: {account.name}", text, f"payment alert {payment_id}")
