"""Card payments through Stripe: the operator's Stripe settings, customers' billing details, one
row per Checkout payment (credited only from a verified webhook), the Stripe events already
handled, refund requests to the card, and numbered invoices in gapless series."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.extensions import db
from controlplane.models.types import BigId, JsonType, Money, StrEnum, UTCDateTime, utcnow

# Stored lengths of what customers and operators type (docs/payments.md lists them).
NAME_MAX = 200
ADDRESS_MAX = 1000
TAX_ID_MAX = 64
EMAIL_MAX = 254
PREFIX_MAX = 20
NOTE_MAX = 500
STRIPE_ID_MAX = 255  # Stripe documents its ids as at most 255 characters


class PaymentStatus(StrEnum):
    PENDING = "pending"  # Checkout opened (or paid by a method that settles later): nothing credited
    PAID = "paid"  # credited, once
    FAILED = "failed"  # the delayed payment failed: nothing was, or will be, credited


class RefundRequestStatus(StrEnum):
    PENDING = "pending"  # waiting for an operator
    APPROVED = "approved"  # refunded to the card
    DECLINED = "declined"


class StripeSettings(db.Model):
    """One row (id 1): what the operator configured in the console. Secrets are Fernet-encrypted
    like upstream keys; only their last four characters are ever shown."""

    __tablename__ = "stripe_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    publishable_key: Mapped[str] = mapped_column(String(STRIPE_ID_MAX), default="")
    secret_key_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret_key_last4: Mapped[str | None] = mapped_column(String(4), nullable=True)
    webhook_secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret_last4: Mapped[str | None] = mapped_column(String(4), nullable=True)
    presets: Mapped[list] = mapped_column(JsonType, default=list)  # µ$ amounts offered as buttons
    min_amount: Mapped[int] = mapped_column(Money, default=5_000_000)
    max_amount: Mapped[int] = mapped_column(Money, default=1_000_000_000)
    seller_name: Mapped[str] = mapped_column(String(NAME_MAX), default="")
    seller_address: Mapped[str] = mapped_column(String(ADDRESS_MAX), default="")
    seller_tax_id: Mapped[str] = mapped_column(String(TAX_ID_MAX), default="")
    seller_email: Mapped[str] = mapped_column(String(EMAIL_MAX), default="")
    invoice_prefix: Mapped[str] = mapped_column(String(PREFIX_MAX), default="INV-")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BillingProfile(db.Model):
    """The customer's billing details, printed on their invoices (copied onto each payment when
    it is started, so a later edit does not rewrite an issued invoice)."""

    __tablename__ = "billing_profiles"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), default="")
    address: Mapped[str] = mapped_column(String(ADDRESS_MAX), default="")
    tax_id: Mapped[str] = mapped_column(String(TAX_ID_MAX), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Payment(db.Model):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    amount: Mapped[int] = mapped_column(Money)  # µ$, whole cents (Stripe charges cents)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    status: Mapped[str] = mapped_column(String(16), default=PaymentStatus.PENDING.value, index=True)
    checkout_session_id: Mapped[str | None] = mapped_column(String(STRIPE_ID_MAX), unique=True, nullable=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(STRIPE_ID_MAX), unique=True, nullable=True)
    payment_method: Mapped[str | None] = mapped_column(String(32), nullable=True)
    credit_entry_id: Mapped[int | None] = mapped_column(BigId, unique=True, nullable=True)
    # Cumulative, as Stripe reports them: an event moves these forward only, so replays and
    # late events change nothing.
    refunded_amount: Mapped[int] = mapped_column(Money, default=0)
    disputed_amount: Mapped[int] = mapped_column(Money, default=0)
    dispute_id: Mapped[str | None] = mapped_column(String(STRIPE_ID_MAX), nullable=True)
    flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    billing_name: Mapped[str] = mapped_column(String(NAME_MAX), default="")
    billing_address: Mapped[str] = mapped_column(String(ADDRESS_MAX), default="")
    billing_tax_id: Mapped[str] = mapped_column(String(TAX_ID_MAX), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    account = relationship("Account")


class StripeEvent(db.Model):
    """Events already handled, by Stripe's id: a redelivered event is answered and ignored."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(STRIPE_ID_MAX), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RefundRequest(db.Model):
    """A customer's request to refund a card top-up's unused part to the card. One per payment:
    an operator's decline is final, an approval refunds once."""

    __tablename__ = "refund_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    reason: Mapped[str] = mapped_column(String(NOTE_MAX), default="")
    status: Mapped[str] = mapped_column(String(16), default=RefundRequestStatus.PENDING.value, index=True)
    amount: Mapped[int | None] = mapped_column(Money, nullable=True)  # µ$ refunded, once approved
    stripe_refund_id: Mapped[str | None] = mapped_column(String(STRIPE_ID_MAX), nullable=True)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decision_note: Mapped[str] = mapped_column(String(NOTE_MAX), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    payment = relationship("Payment")
    account = relationship("Account")


class InvoiceSeries(db.Model):
    """A numbering series (its prefix is the operator's): the next number is taken in the same
    transaction that credits the payment, so a rolled-back credit leaves no gap."""

    __tablename__ = "invoice_series"

    id: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(String(PREFIX_MAX), unique=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class Invoice(db.Model):
    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("series_id", "number", name="uq_invoices_series_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("invoice_series.id"))
    number: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(40), unique=True)  # prefix + number, as printed
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    seller: Mapped[dict] = mapped_column(JsonType)  # name, address, tax_id, email as issued
    buyer: Mapped[dict] = mapped_column(JsonType)  # name, address, tax_id, email as issued
    amount: Mapped[int] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    payment_method: Mapped[str] = mapped_column(String(32))
    checkout_session_id: Mapped[str | None] = mapped_column(String(STRIPE_ID_MAX), nullable=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(STRIPE_ID_MAX), nullable=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    payment = relationship("Payment")
