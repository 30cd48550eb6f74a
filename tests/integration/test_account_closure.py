"""Closing an account, by its holder (after signing in again) or by an operator, on both SQL back
ends: keys revoked at once (their records leave Redis), personal data replaced, the ledger, request
logs and balance kept, the unused balance and refundable top-ups recorded in the audit entry."""
from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import func, select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import ApiKey, AuditEntry, LedgerEntry, RequestLog, User, UserSession
from controlplane.runtime import runtime
from controlplane.services import ServiceError, api_tokens, closure, keys, organisations
from relay import keys as rk
from relay.usage import UsageEvent
from tests import factories
from tests.console import person, post, sign_in, text
from tests.helpers import login, post_form
from tests.integration.test_two_factor import enrol, now_code
from workers.usage import write_batch

PASSWORD = "correct horse battery"


def customer(email: str = "ana@example.com", usd: str = "10"):
    user = factories.user(email, password=PASSWORD)
    factories.billing.topup(factories.ACTOR, user.account, usd, "card 4242")
    return user


def spend(user, key, cost: int) -> None:
    now = time.time()
    write_batch([UsageEvent(request_id=f"req_close_{key.id}", started_at=now, finished_at=now, endpoint="/v1/chat/completions", status=200,
                            account_id=user.account_id, user_id=user.id, api_key_id=key.id, model="gpt-4o-mini", cost=cost)])
    db.session.commit()


def record_exists(key) -> bool:
    return bool(runtime().redis.exists(rk.record_key(key.key_hash)))


def test_the_holder_closes_after_signing_in_again(sql_app):
    ana = customer()
    key, _ = keys.create_key(factories.ACTOR, ana, "laptop")
    spend(ana, key, 1_500_000)
    assert record_exists(key)
    client = sql_app.test_client()
    login(client, ana.email, PASSWORD)
    page = text(client.get("/account/close"))
    assert "$8.50" in page and "refundable under the terms" in page and "1 API key" in page
    wrong = post_form(client, "/account/close", {"password": "not it"}, token_from="/account/close")
    assert wrong.status_code == 400 and "not your current password" in text(wrong)
    db.session.refresh(ana)
    assert ana.status == "active" and record_exists(key)

    done = post_form(client, "/account/close", {"password": PASSWORD}, token_from="/account/close")
    assert done.status_code == 302 and "/login" in done.headers["Location"]
    db.session.expire_all()
    ana = db.session.get(User, ana.id)
    assert (ana.status, ana.email, ana.password_hash) == ("closed", f"closed-{ana.id}@closed.invalid", None)
    assert ana.account.name == f"Closed account {ana.account_id}" and ana.account.closed_at is not None
    assert db.session.get(ApiKey, key.id).status == "deleted" and not record_exists(key)
    assert db.session.scalar(select(func.count()).select_from(UserSession).where(UserSession.user_id == ana.id,
                                                                                   UserSession.revoked_at.is_(None))) == 0
    # the money and the request metadata stay: no entry was posted, the balance is untouched
    assert ledger.stored_balance(ana.account_id) == 8_500_000 == ledger.sum_of_entries(ana.account_id)
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.account_id == ana.account_id)) == 2
    assert db.session.scalar(select(RequestLog.account_id).where(RequestLog.request_id == f"req_close_{key.id}")) == ana.account_id
    closed = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "account.close"))
    assert closed.after["unused_balance_micro_usd"] == 8_500_000 and closed.after["keys_revoked"] == 1
    topup = db.session.scalar(select(LedgerEntry.id).where(LedgerEntry.kind == "topup"))
    assert closed.after["refundable_topups"] == [{"entry_id": topup, "unused_micro_usd": 8_500_000}]
    assert "ana@example.com" not in str(closed.after)
    # signed out, cannot sign in, and the address is free for a new account
    assert client.get("/account").status_code == 302
    assert login(sql_app.test_client(), "ana@example.com", PASSWORD).status_code != 302
    assert factories.user("ana@example.com").id != ana.id


def test_two_factor_holders_give_a_code_too(sql_app):
    ana = customer()
    client = sql_app.test_client()
    login(client, ana.email, PASSWORD)
    secret, _ = enrol(client)
    refused = post_form(client, "/account/close", {"password": PASSWORD, "code": "000000"}, token_from="/account/close")
    assert refused.status_code == 400 and "code does not match" in text(refused)
    db.session.refresh(ana)
    assert ana.status == "active"
    done = post_form(client, "/account/close", {"password": PASSWORD, "code": now_code(secret, 1)}, token_from="/account/close")
    assert done.status_code == 302
    db.session.refresh(ana)
    assert ana.status == "closed" and ana.totp_secret is None


def test_the_last_owner_of_an_organisation_with_members_must_hand_it_over(sql_app):
    owner, member = customer("owner@example.com"), factories.user()
    org = organisations.create_organisation(factories.ACTOR, owner, "Acme")
    _, token = organisations.invite(factories.ACTOR, organisations.membership(org.id, owner.id), None, "member")
    organisations.accept(factories.ACTOR, member, organisations.open_invitation(token))
    with pytest.raises(ServiceError) as refused:
        closure.close(factories.ACTOR, owner)
    assert refused.value.status == 409 and "last owner of Acme" in refused.value.message
    org_key, _ = keys.create_key(factories.ACTOR, member, "org key", account_id=org.id)
    closure.close(factories.ACTOR, member)  # a member leaves with their keys
    assert organisations.membership(org.id, member.id) is None and db.session.get(ApiKey, org_key.id).status == "deleted"


def test_an_operator_closes_with_a_confirmation_and_the_account_stays_closed(sql_app):
    ana = customer()
    key, _ = keys.create_key(factories.ACTOR, ana, "laptop")
    staff = sign_in(sql_app.test_client(), person("operator"))
    asked = post(staff, f"/admin/users/{ana.id}/close", {"reason": "asked by email"})
    assert "Close the account of ana@example.com?" in text(asked) and "$10.00 stays on the closed account" in text(asked)
    db.session.refresh(ana)
    assert ana.status == "active"
    assert post(staff, f"/admin/users/{ana.id}/close", {"reason": "asked by email"}, confirm=True).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, ana.id).status == "closed" and not record_exists(key)
    assert "Closed" in text(staff.get(f"/admin/users/{ana.id}"))
    again = post(staff, f"/admin/users/{ana.id}/status", {"active": "yes"})
    assert again.status_code == 302 and db.session.get(User, ana.id).status == "closed"
    assert ledger.stored_balance(ana.account_id) == 10_000_000
    with pytest.raises(ServiceError) as no_keys:
        keys.create_key(factories.ACTOR, db.session.get(User, ana.id), "after closing")
    assert no_keys.value.status == 409


def test_the_admin_api_closes_and_refuses_operators(sql_app):
    _, secret = api_tokens.create_token(factories.ACTOR, person("operator", "script@example.com"), "ci")
    api = sql_app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    ana = customer()
    assert api.post(f"/admin/api/v1/users/{ana.id}/close", json={}).json["error"]["param"] == "reason"
    closed = api.post(f"/admin/api/v1/users/{ana.id}/close", json={"reason": "ticket 12"})
    assert closed.status_code == 200 and closed.json["status"] == "closed" and closed.json["unused_balance_micro_usd"] == 10_000_000
    assert api.post(f"/admin/api/v1/users/{ana.id}/close", json={"reason": "twice"}).status_code == 409
    other = person("support", "help@example.com")
    assert api.post(f"/admin/api/v1/users/{other.id}/close", json={"reason": "x"}).status_code == 409
    assert re.match(r"closed-\d+@closed\.invalid", closed.json["email"])


def test_guessing_the_password_on_the_closing_page_is_throttled(sql_app):
    ana = customer()
    client = sql_app.test_client()
    login(client, ana.email, PASSWORD)
    for _ in range(5):
        assert post_form(client, "/account/close", {"password": "guess"}, token_from="/account/close").status_code == 400
    stopped = post_form(client, "/account/close", {"password": PASSWORD}, token_from="/account/close")
    assert stopped.status_code == 429 and "Too many attempts" in text(stopped)
    db.session.refresh(ana)
    assert ana.status == "active"
