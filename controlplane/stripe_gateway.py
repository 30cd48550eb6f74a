"""The one module that talks to Stripe, through the official `stripe` library: Checkout sessions
(create, retrieve, a day's list), refunds, and verifying a webhook's signature. What crosses out
of here are typed dataclasses, never the library's objects.

Amounts: Stripe counts cents; the rest of Switchboard counts µ$ (1 cent = 10,000 µ$).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

MICRO_PER_CENT = 10_000
WEBHOOK_TOLERANCE_SECONDS = 300  # Stripe's own default: a signature older than this is refused
LIST_PAGE = 100
# The metadata key naming our payment on Stripe's objects: a name of its own, so another integration
# on the same Stripe account (with its own "payment_id") is never mistaken for ours.
REFERENCE = "switchboard_payment_id"
CONNECT_SECONDS, ANSWER_SECONDS = 10, 30


class StripeUnavailable(RuntimeError):
    """Stripe refused or could not be reached; the message is safe to show an operator."""


class BadSignature(ValueError):
    """A webhook whose signature, timestamp or body does not check out."""


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str | None
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    amount_total: int  # cents
    currency: str
    payment_intent: str | None
    client_reference_id: str | None
    created: int

    @property
    def amount_micro(self) -> int:
        return self.amount_total * MICRO_PER_CENT


@dataclass(frozen=True)
class CardRefund:
    id: str
    amount: int  # cents
    status: str


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    created: int
    object: dict[str, Any]


@dataclass(frozen=True)
class NewCheckout:
    """What a Checkout page asks the customer to pay."""

    payment_id: int
    amount_cents: int
    currency: str
    product: str
    success_url: str
    cancel_url: str
    customer_email: str | None = None


def _session(raw: Any) -> CheckoutSession:
    data = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    intent = data.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    return CheckoutSession(id=data["id"], url=data.get("url"), status=data.get("status") or "", payment_status=data.get("payment_status") or "",
                           amount_total=int(data.get("amount_total") or 0), currency=data.get("currency") or "usd", payment_intent=intent,
                           client_reference_id=data.get("client_reference_id"), created=int(data.get("created") or 0))


def session_from_event(obj: dict[str, Any]) -> CheckoutSession:
    return _session(obj)


def day_bounds(day: date) -> tuple[int, int]:
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    return int(start.timestamp()), int((start + timedelta(days=1)).timestamp())


class StripeGateway:
    def __init__(self, secret_key: str, api_base: str = "", timeout_retries: int = 2):
        if not secret_key:
            raise StripeUnavailable("Card payments are not set up: the operator has not entered a Stripe secret key.")
        import stripe  # the library loads on first use, not with every process that imports the app

        bases: dict[str, str] = {"api": api_base.rstrip("/")} if api_base else {}
        # A customer or an operator waits on these calls: seconds to connect and to answer, not the library's 80.
        http = stripe.RequestsClient(timeout=(CONNECT_SECONDS, ANSWER_SECONDS))
        self._client = stripe.StripeClient(secret_key, base_addresses=bases, max_network_retries=timeout_retries,  # type: ignore[arg-type]
                                           http_client=http)

    def _call(self, fn, *args, **kwargs):
        import stripe

        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as error:
            message = getattr(error, "user_message", None) or str(error) or type(error).__name__
            raise StripeUnavailable(f"Stripe: {message}") from None

    def create_checkout(self, new: NewCheckout) -> CheckoutSession:
        params = {
            "mode": "payment",
            "client_reference_id": str(new.payment_id),
            "metadata": {REFERENCE: str(new.payment_id)},
            "payment_intent_data": {"metadata": {REFERENCE: str(new.payment_id)}},
            "line_items": [{"quantity": 1, "price_data": {"currency": new.currency, "unit_amount": new.amount_cents,
                                                          "product_data": {"name": new.product}}}],
            "success_url": new.success_url,
            "cancel_url": new.cancel_url,
        }
        if new.customer_email:
            params["customer_email"] = new.customer_email
        # The library retries a lost answer under an idempotency key of its own: one session per call.
        raw = self._call(self._client.v1.checkout.sessions.create, params=params)
        return _session(raw)

    def retrieve_session(self, session_id: str) -> CheckoutSession:
        return _session(self._call(self._client.v1.checkout.sessions.retrieve, session_id))

    def payment_method_used(self, payment_intent: str) -> str | None:
        """What the customer paid with ("card", "link", …): the payment intent's latest charge says.
        A Checkout session only lists the methods it offered."""
        raw = self._call(self._client.v1.payment_intents.retrieve, payment_intent, params={"expand": ["latest_charge"]})
        charge = raw.to_dict().get("latest_charge")
        details = charge.get("payment_method_details") if isinstance(charge, dict) else None
        kind = details.get("type") if isinstance(details, dict) else None
        return str(kind)[:32] if kind else None

    def sessions_created_on(self, day: date) -> list[CheckoutSession]:
        """Every Checkout session created on a UTC day, following Stripe's pages."""
        start, end = day_bounds(day)
        out: list[CheckoutSession] = []
        params: dict[str, Any] = {"created": {"gte": start, "lt": end}, "limit": LIST_PAGE}
        while True:
            page = self._call(self._client.v1.checkout.sessions.list, params=params)
            rows = [_session(row) for row in page.data]
            out.extend(rows)
            if not page.has_more or not rows:
                return out
            params = {**params, "starting_after": rows[-1].id}

    def refund(self, payment_intent: str, amount_cents: int, idempotency_key: str) -> CardRefund:
        raw = self._call(self._client.v1.refunds.create, params={"payment_intent": payment_intent, "amount": amount_cents},
                         options={"idempotency_key": idempotency_key})
        data = raw.to_dict()
        return CardRefund(id=data["id"], amount=int(data.get("amount") or 0), status=data.get("status") or "")


def verify_event(payload: bytes, signature_header: str | None, webhook_secret: str) -> Event:
    """The event, once its `Stripe-Signature` (HMAC-SHA256 over "timestamp.body") matches and its
    timestamp is within the tolerance; BadSignature otherwise."""
    if not webhook_secret:
        raise BadSignature("no webhook signing secret is configured")
    import stripe

    try:
        event = stripe.Webhook.construct_event(payload, signature_header, webhook_secret, WEBHOOK_TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as error:
        raise BadSignature(str(error).split(".")[0]) from None
    except (ValueError, KeyError) as error:
        raise BadSignature(f"not a Stripe event: {error}") from None
    data = event.to_dict()
    obj = (data.get("data") or {}).get("object") or {}
    return Event(id=str(data.get("id") or ""), type=str(data.get("type") or ""), created=int(data.get("created") or 0), object=obj)
