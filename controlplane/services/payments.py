"""Card top-ups: the customer's billing details, opening a Stripe Checkout for an amount, and the
operator's reconciliation of a day's payments against Stripe's list.

Opening a Checkout credits nothing: money is credited only when Stripe's signed webhook says the
session is paid (services/stripe_events.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import select

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import Account, BillingProfile, Payment, PaymentStatus, User, utcnow
from controlplane.models.payments import ADDRESS_MAX, NAME_MAX, TAX_ID_MAX
from controlplane.services import payment_settings
from controlplane.services.base import Actor, ServiceError, audit, commit
from controlplane.stripe_gateway import MICRO_PER_CENT, CheckoutSession, NewCheckout, StripeUnavailable
from relay.pricing import usd_text

PRODUCT = "Switchboard credit"


def profile(account_id: int) -> BillingProfile:
    found = db.session.get(BillingProfile, account_id)
    return found if found is not None else BillingProfile(account_id=account_id, name="", address="", tax_id="")


def _field(value: str | None, field: str, limit: int) -> str:
    value = (value or "").strip()
    if len(value) > limit:
        raise ServiceError(f"At most {limit} characters.", field)
    return value


@dataclass(frozen=True)
class BillingDetails:
    name: str = ""
    address: str = ""
    tax_id: str = ""


def _stage_profile(actor: Actor, account: Account, details: BillingDetails) -> BillingProfile:
    name, address = _field(details.name, "name", NAME_MAX), _field(details.address, "address", ADDRESS_MAX)
    tax_id = _field(details.tax_id, "tax_id", TAX_ID_MAX)
    row = db.session.get(BillingProfile, account.id) or BillingProfile(account_id=account.id)
    row.name, row.address, row.tax_id, row.updated_at = name, address, tax_id, utcnow()
    db.session.add(row)
    audit(actor, "billing.profile", "account", account.id, after={"name": name, "address": address, "tax_id": tax_id})
    return row


def save_profile(actor: Actor, account: Account, name: str, address: str, tax_id: str) -> BillingProfile:
    """The details printed on the next invoices (issued invoices keep what they were issued with)."""
    row = _stage_profile(actor, account, BillingDetails(name, address, tax_id))
    commit(publish=False)
    return row


def check_amount(usd: str, config: payment_settings.PaymentConfig) -> int:
    amount = validation.usd(usd, "amount", allow_zero=False)
    if amount % MICRO_PER_CENT:
        raise ServiceError("Card payments are whole cents, like 20 or 12.50.", "amount")
    if amount < config.min_amount:
        raise ServiceError(f"The smallest top-up is {usd_text(config.min_amount)}.", "amount")
    if amount > config.max_amount:
        raise ServiceError(f"The largest top-up is {usd_text(config.max_amount)}.", "amount")
    return amount


@dataclass(frozen=True)
class StartedCheckout:
    payment_id: int
    url: str


def start_checkout(actor: Actor, user: User, account: Account, usd: str, success_url: str, cancel_url: str,
                   details: BillingDetails | None = None) -> StartedCheckout:
    """A pending payment and its Stripe Checkout session; the customer is sent to `url`. Billing
    `details`, when given, are saved for this and later invoices (only when the amount is valid too).

    `success_url` may contain `{CHECKOUT_SESSION_ID}`, which Stripe fills in on the way back.
    """
    config = payment_settings.load()
    if not config.enabled:
        raise ServiceError("Card payments are not available on this gateway yet.", "amount", status=503)
    amount = check_amount(usd, config)
    if details is not None:
        _stage_profile(actor, account, details)
    saved = profile(account.id)
    payment = Payment(account_id=account.id, user_id=user.id, amount=amount, currency="usd", status=PaymentStatus.PENDING.value,
                      billing_name=saved.name, billing_address=saved.address, billing_tax_id=saved.tax_id)
    db.session.add(payment)
    db.session.flush()
    audit(actor, "payment.start", "account", account.id, after={"payment_id": payment.id, "amount_micro_usd": amount})
    commit(publish=False)  # the row exists before Stripe hears of it, so every session maps to a payment
    try:
        session = config.gateway().create_checkout(NewCheckout(
            payment_id=payment.id, amount_cents=amount // MICRO_PER_CENT, currency="usd", product=PRODUCT,
            success_url=success_url, cancel_url=cancel_url, customer_email=user.email))
    except StripeUnavailable as error:
        payment.status, payment.failed_at = PaymentStatus.FAILED.value, utcnow()
        commit(publish=False)
        raise ServiceError(f"The payment page could not be opened ({error}). Nothing was charged; try again in a moment.", "amount",
                           status=502) from None
    payment.checkout_session_id = session.id
    commit(publish=False)
    return StartedCheckout(payment.id, session.url or "")


def payment_for_session(account_id: int, session_id: str) -> Payment | None:
    return db.session.scalar(select(Payment).where(Payment.account_id == account_id, Payment.checkout_session_id == session_id))


@dataclass(frozen=True)
class ReconcileRow:
    """One payment seen by Stripe, Switchboard or both, and whether the two agree."""

    session_id: str
    payment: Payment | None
    stripe: CheckoutSession | None
    problem: str  # "" when they agree

    @property
    def creditable(self) -> bool:
        """Paid on Stripe, not credited here: the webhook never arrived (or was refused)."""
        return (self.payment is not None and self.stripe is not None and self.stripe.payment_status == "paid"
                and self.payment.status == PaymentStatus.PENDING.value)


def _problem(payment: Payment | None, session: CheckoutSession | None) -> str:
    if session is None:
        return "not in Stripe's list for this day" if payment is not None and payment.checkout_session_id else ""
    if payment is None:
        return "paid on Stripe, unknown here" if session.payment_status == "paid" else ""
    if session.amount_micro != payment.amount:
        return f"amounts differ: Stripe {usd_text(session.amount_micro)}, here {usd_text(payment.amount)}"
    paid_there, paid_here = session.payment_status == "paid", payment.status == PaymentStatus.PAID.value
    if paid_there and not paid_here:
        return "paid on Stripe, not credited here"
    if paid_here and not paid_there:
        return "credited here, not paid on Stripe"
    return ""


def reconcile_day(day: date) -> list[ReconcileRow]:
    """Stripe's Checkout sessions created on `day` (UTC) beside the payments started that day."""
    config = payment_settings.load()
    sessions = {s.id: s for s in config.gateway().sessions_created_on(day)}
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    ours = list(db.session.scalars(select(Payment).where(Payment.created_at >= start, Payment.created_at < start + timedelta(days=1))))
    by_session = {p.checkout_session_id: p for p in ours if p.checkout_session_id}
    extra = [sid for sid in sessions if sid not in by_session]
    if extra:  # started the evening before, or matched by id only
        by_session.update({p.checkout_session_id: p for p in db.session.scalars(select(Payment).where(Payment.checkout_session_id.in_(extra)))})
    rows = [ReconcileRow(sid, by_session.get(sid), sessions.get(sid), _problem(by_session.get(sid), sessions.get(sid)))
            for sid in sorted(set(sessions) | set(by_session), key=lambda s: (sessions[s].created if s in sessions else 0, s))]
    rows += [ReconcileRow("", p, None, "") for p in ours if not p.checkout_session_id]
    return rows
