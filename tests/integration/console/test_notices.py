"""Notices the terms promise: scheduled price changes to models an account used in the last 30 days
(on the dashboard, and emailed once), terms versions (accepted at sign-up, announced 14 days ahead,
emailed once, on the dashboard), from the operator console and the admin API."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import PriceNotice, TermsAcceptance, User, utcnow
from controlplane.services import ServiceError, api_tokens, keys, prices, terms
from tests import factories
from tests.console import person as staff_person, post, sign_in, text
from tests.helpers import post_form
from workers import notices

from .conftest import client_for, event, ingest, person
from .test_alerts_and_mail import inbox  # noqa: F401 - fixture


def schedule(model: str, days: int = 8, input: str = "0.30", output: str = "1.20"):
    return prices.set_price(factories.ACTOR, model, input=input, output=output, effective_from=utcnow() + timedelta(days=days))


def test_the_dashboard_shows_price_changes_for_models_used_in_the_last_30_days(app, served):
    ana = person("ana@example.com", usd="5")
    key, _ = keys.create_key(factories.ACTOR, ana, "k")
    ingest(event(key, model="gpt-4o-mini"), event(key, model="gpt-4o", started_at=time.time() - 31 * 86_400))
    schedule("gpt-4o-mini")
    schedule("gpt-4o", input="3", output="12")
    page = text(client_for(app, ana).get("/"))
    assert "Price change</strong> for gpt-4o-mini" in page and "$0.15 → $0.30" in page
    assert "for gpt-4o on" not in page  # used 31 days ago: no longer this account's concern


def test_price_notices_are_emailed_once_to_accounts_that_used_the_model(app, served, inbox):
    ana, bob = person("ana@example.com", usd="5"), person("bob@example.com", usd="5")
    ana_key, _ = keys.create_key(factories.ACTOR, ana, "k")
    bob_key, _ = keys.create_key(factories.ACTOR, bob, "k")
    ingest(event(ana_key, model="gpt-4o-mini"), event(bob_key, model="gpt-4o"))
    row = schedule("gpt-4o-mini")
    assert notices.send_notices() == 1
    assert notices.send_notices() == 0  # claimed: never twice
    [message] = inbox.messages
    assert message["To"] == "ana@example.com" and message["Subject"] == f"Price change for gpt-4o-mini on {row.effective_from:%Y-%m-%d}"
    assert "input $0.30, output $1.20" in message.get_payload()
    assert db.session.scalar(select(PriceNotice.account_id)) == ana.account_id


def test_without_smtp_nothing_is_claimed(app, served):
    ana = person("ana@example.com", usd="5")
    key, _ = keys.create_key(factories.ACTOR, ana, "k")
    ingest(event(key, model="gpt-4o-mini"))
    schedule("gpt-4o-mini")
    assert notices.send_notices() == 0 and db.session.scalar(select(PriceNotice.id)) is None


def test_terms_are_accepted_at_sign_up_and_new_versions_need_14_days(app):
    first = terms.publish(factories.ACTOR, "2026-01", "First terms.", "https://example.com/terms", None)
    assert terms.in_force().id == first.id
    with pytest.raises(ServiceError) as early:
        terms.publish(factories.ACTOR, "2026-12", "Refunds change.", None, utcnow() + timedelta(days=13))
    assert "at least 14 days" in early.value.message
    client = app.test_client()
    page = client.get("/signup").get_data(as_text=True)
    assert "you accept the" in page and "version 2026-01" in page
    assert post_form(client, "/signup", {"email": "new@example.com", "password": "a long password", "confirm": "a long password"}).status_code == 302
    user = db.session.scalar(select(User).where(User.email == "new@example.com"))
    assert db.session.scalar(select(TermsAcceptance.terms_version_id).where(TermsAcceptance.user_id == user.id)) == first.id


def test_a_new_version_is_on_the_dashboard_and_emailed_once(app, inbox):
    ana = person("ana@example.com", usd="5")
    staff_person("operator", "ops@example.com")
    terms.publish(factories.ACTOR, "2026-01", "First terms.", None, None)
    assert notices.send_notices() == 0  # in force already: nothing to announce
    terms.publish(factories.ACTOR, "2026-12", "Refunds within 14 days of a top-up.", "https://example.com/terms/2026-12",
                  utcnow() + timedelta(days=15))
    assert "New terms of service</strong> (version 2026-12)" in text(client_for(app, ana).get("/"))
    assert notices.send_notices() == 1 and notices.send_notices() == 0
    [message] = inbox.messages  # customers only, not operators
    assert message["To"] == "ana@example.com" and "Refunds within 14 days" in message.get_payload()


def test_operators_announce_versions_in_the_console_and_the_api(app):
    ops = sign_in(app.test_client(), staff_person("operator"))
    assert "No terms published yet" in text(ops.get("/admin/terms/"))
    assert post(ops, "/admin/terms/", {"version": "v1", "summary": "First."}).status_code == 302
    too_soon = post(ops, "/admin/terms/", {"version": "v2", "summary": "Second.", "effective_at": (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")})
    assert too_soon.status_code == 400 and "at least 14 days" in text(too_soon)
    assert "in force" in text(ops.get("/admin/terms/"))
    _, secret = api_tokens.create_token(factories.ACTOR, staff_person("admin"), "ci")
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    created = api.post("/admin/api/v1/terms", json={"version": "v2", "summary": "Second.", "effective_at": (utcnow() + timedelta(days=20)).isoformat()})
    assert created.status_code == 201
    assert [t["version"] for t in api.get("/admin/api/v1/terms").json["data"]] == ["v2", "v1"]
    assert api.post("/admin/api/v1/terms", json={"version": "v2", "summary": "Again.", "effective_at": (utcnow() + timedelta(days=30)).isoformat()}
                    ).status_code == 409


def test_a_terms_notice_goes_out_in_claimed_chunks_and_resumes(app, inbox, monkeypatch):
    monkeypatch.setattr(notices, "TERMS_CHUNK", 2)
    people = [person(f"p{i}@example.com") for i in range(3)]
    terms.publish(factories.ACTOR, "v1", "First.", None, None)
    row = terms.publish(factories.ACTOR, "v2", "Second.", None, utcnow() + timedelta(days=14, minutes=5))
    row.notified_through = people[0].id  # a run that told the first person was cut short
    db.session.commit()
    assert notices.send_notices() == 2
    assert sorted(m["To"] for m in inbox.messages) == ["p1@example.com", "p2@example.com"]
    db.session.refresh(row)
    assert row.notified_at is not None and notices.send_notices() == 0
