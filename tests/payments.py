"""Helpers for card-payment tests: the fake Stripe, the operator's settings pointing the official
library at it, a customer's paid top-up, and webhook deliveries signed as Stripe signs them."""
from __future__ import annotations

import dataclasses

import pytest

from controlplane.runtime import runtime
from controlplane.services import payment_settings, payments
from tests import factories
from tests.fakes.stripe_server import FakeStripe


@pytest.fixture(scope="module")
def stripe_fake():
    fake = FakeStripe()
    yield fake
    fake.close()


def configure(fake: FakeStripe, **overrides) -> None:
    given = dict(publishable_key="pk_test_fake", secret_key=fake.secret_key, webhook_secret=fake.webhook_secret, presets="10, 25, 50",
                 min_amount="5", max_amount="500", seller_name="Switchboard Ltd", seller_address="1 Relay Street\nLondon",
                 seller_tax_id="GB123456789", seller_email="billing@switchboard.example", invoice_prefix="INV-")
    given.update(overrides)
    payment_settings.save(factories.ACTOR, payment_settings.SettingsInput(**given))


@pytest.fixture
def card_payments(stripe_fake, monkeypatch):
    """Card payments set up in the current app, the library pointed at the fake Stripe."""
    stripe_fake.reset()
    rt = runtime()
    monkeypatch.setattr(rt, "settings", dataclasses.replace(rt.settings, stripe_api_base=stripe_fake.url))
    configure(stripe_fake)
    return stripe_fake


def deliver(client, fake: FakeStripe, event: dict, **sign_kwargs):
    body, headers = fake.signed(event, **sign_kwargs)
    return client.post("/stripe/webhook", data=body, headers=headers)


def start(user, usd: str = "20", account=None):
    """A customer opens Checkout for `usd`; returns (payment id, Checkout session id)."""
    started = payments.start_checkout(factories.ACTOR, user, account or user.account, usd, "https://gw.example/billing/topup/return?session_id={CHECKOUT_SESSION_ID}",
                                      "https://gw.example/billing/topup")
    from controlplane.extensions import db
    from controlplane.models import Payment

    return started.payment_id, db.session.get(Payment, started.payment_id).checkout_session_id


def paid_topup(client, fake: FakeStripe, user, usd: str = "20"):
    """A top-up paid on the fake Checkout and credited from its webhook; returns the payment id."""
    payment_id, session_id = start(user, usd)
    assert deliver(client, fake, fake.pay(session_id)).status_code == 200
    return payment_id
