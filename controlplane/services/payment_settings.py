"""The operator's card-payment settings: Stripe keys (secrets encrypted, write-only), the amounts
customers may choose, the seller's details and the invoice series. One row, audited on change."""
from __future__ import annotations

import re
from dataclasses import dataclass

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import InvoiceSeries, StripeSettings, utcnow
from controlplane.models.payments import ADDRESS_MAX, EMAIL_MAX, NAME_MAX, PREFIX_MAX, STRIPE_ID_MAX, TAX_ID_MAX
from controlplane.runtime import runtime
from controlplane.services.base import Actor, ServiceError, audit, commit
from controlplane.stripe_gateway import MICRO_PER_CENT, StripeGateway
from relay.pricing import micro_to_usd

MAX_PRESETS = 8
PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]*")


@dataclass(frozen=True)
class Seller:
    name: str
    address: str
    tax_id: str
    email: str

    def as_dict(self) -> dict:
        return {"name": self.name, "address": self.address, "tax_id": self.tax_id, "email": self.email}


@dataclass(frozen=True)
class PaymentConfig:
    """What the payment paths need, secrets decrypted."""

    secret_key: str
    webhook_secret: str
    publishable_key: str
    presets: tuple[int, ...]
    min_amount: int
    max_amount: int
    seller: Seller
    invoice_prefix: str

    @property
    def enabled(self) -> bool:
        return bool(self.secret_key and self.webhook_secret)

    def gateway(self) -> StripeGateway:
        return StripeGateway(self.secret_key, runtime().settings.stripe_api_base)


def row() -> StripeSettings:
    found = db.session.get(StripeSettings, 1)
    if found is None:
        found = StripeSettings(id=1, publishable_key="", presets=[10_000_000, 25_000_000, 50_000_000], min_amount=5_000_000,
                               max_amount=1_000_000_000, seller_name="", seller_address="", seller_tax_id="", seller_email="",
                               invoice_prefix="INV-")
    return found


def load() -> PaymentConfig:
    settings = row()
    cipher = runtime().cipher
    return PaymentConfig(
        secret_key=cipher.decrypt(settings.secret_key_encrypted) if settings.secret_key_encrypted else "",
        webhook_secret=cipher.decrypt(settings.webhook_secret_encrypted) if settings.webhook_secret_encrypted else "",
        publishable_key=settings.publishable_key, presets=tuple(int(p) for p in settings.presets or ()), min_amount=settings.min_amount,
        max_amount=settings.max_amount,
        seller=Seller(settings.seller_name, settings.seller_address, settings.seller_tax_id, settings.seller_email),
        invoice_prefix=settings.invoice_prefix)


def _text(value: str | None, field: str, limit: int) -> str:
    value = (value or "").strip()
    if len(value) > limit:
        raise ServiceError(f"At most {limit} characters.", field)
    return value


def _whole_cents(value: str, field: str) -> int:
    micro = validation.usd(value, field, allow_zero=False)
    if micro % MICRO_PER_CENT:
        raise ServiceError("Card payments are whole cents, like 10 or 12.50.", field)
    return micro


def describe(settings: StripeSettings) -> dict:
    """For the audit log: never a secret, only whether one is set and its last four characters."""
    return {"publishable_key": settings.publishable_key, "secret_key_last4": settings.secret_key_last4,
            "webhook_secret_last4": settings.webhook_secret_last4, "presets": list(settings.presets or []),
            "min_amount": settings.min_amount, "max_amount": settings.max_amount, "seller_name": settings.seller_name,
            "seller_address": settings.seller_address, "seller_tax_id": settings.seller_tax_id, "seller_email": settings.seller_email,
            "invoice_prefix": settings.invoice_prefix}


@dataclass(frozen=True)
class SettingsInput:
    publishable_key: str = ""
    secret_key: str = ""  # empty: keep the stored one
    webhook_secret: str = ""  # empty: keep the stored one
    presets: str = ""  # "10, 25, 50"
    min_amount: str = "5"
    max_amount: str = "1000"
    seller_name: str = ""
    seller_address: str = ""
    seller_tax_id: str = ""
    seller_email: str = ""
    invoice_prefix: str = "INV-"


def save(actor: Actor, given: SettingsInput) -> StripeSettings:
    stored = db.session.get(StripeSettings, 1)
    before = describe(stored) if stored is not None else None
    settings = stored or row()
    publishable = _text(given.publishable_key, "publishable_key", STRIPE_ID_MAX)
    if publishable and not publishable.startswith("pk_"):
        raise ServiceError("A publishable key starts with pk_.", "publishable_key")
    secret = _text(given.secret_key, "secret_key", STRIPE_ID_MAX)
    if secret and not secret.startswith(("sk_", "rk_")):
        raise ServiceError("A secret key starts with sk_ (or rk_ for a restricted key).", "secret_key")
    hook = _text(given.webhook_secret, "webhook_secret", STRIPE_ID_MAX)
    if hook and not hook.startswith("whsec_"):
        raise ServiceError("A webhook signing secret starts with whsec_.", "webhook_secret")
    minimum, maximum = _whole_cents(given.min_amount, "min_amount"), _whole_cents(given.max_amount, "max_amount")
    if minimum > maximum:
        raise ServiceError("The minimum is above the maximum.", "min_amount")
    presets = [_whole_cents(p, "presets") for p in (given.presets or "").replace(";", ",").split(",") if p.strip()]
    if len(presets) > MAX_PRESETS:
        raise ServiceError(f"At most {MAX_PRESETS} amounts.", "presets")
    outside = [p for p in presets if not minimum <= p <= maximum]
    if outside:
        raise ServiceError(f"{micro_to_usd(outside[0])} is outside the minimum and maximum.", "presets")
    prefix = _text(given.invoice_prefix, "invoice_prefix", PREFIX_MAX)
    if not PREFIX.fullmatch(prefix):
        raise ServiceError("Name the invoice series with letters, digits and - _ / . (like INV-2027-).", "invoice_prefix")
    email = _text(given.seller_email, "seller_email", EMAIL_MAX)
    if email:
        email = validation.email(email, "seller_email")
    cipher = runtime().cipher
    settings.publishable_key = publishable
    if secret:
        settings.secret_key_encrypted, settings.secret_key_last4 = cipher.encrypt(secret), secret[-4:]
    if hook:
        settings.webhook_secret_encrypted, settings.webhook_secret_last4 = cipher.encrypt(hook), hook[-4:]
    settings.presets, settings.min_amount, settings.max_amount = sorted(set(presets)), minimum, maximum
    settings.seller_name = _text(given.seller_name, "seller_name", NAME_MAX)
    settings.seller_address = _text(given.seller_address, "seller_address", ADDRESS_MAX)
    settings.seller_tax_id = _text(given.seller_tax_id, "seller_tax_id", TAX_ID_MAX)
    settings.seller_email = email
    settings.invoice_prefix = prefix
    settings.updated_at = utcnow()
    db.session.add(settings)
    if db.session.query(InvoiceSeries.id).filter_by(prefix=prefix).first() is None:
        db.session.add(InvoiceSeries(prefix=prefix, last_number=0))
    db.session.flush()
    audit(actor, "payments.settings", "stripe_settings", 1, before=before, after=describe(settings))
    commit(publish=False)
    return settings
