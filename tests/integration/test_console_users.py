"""Users in the console: search, the detail page (balance, holds, ledger, keys, usage), top-ups and
adjustments that confirm first and explain bad input, group and role changes, and sign-in."""
from __future__ import annotations

from sqlalchemy import select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import AuditEntry, LedgerEntry, User
from controlplane.runtime import runtime
from controlplane.services import groups
from tests import factories
from tests.console import admin, as_admin, as_operator, as_support, operator, person, post, support, text  # noqa: F401


def test_search_by_email_or_id_and_filter_by_role_and_group(as_operator):
    ana = factories.user("ana@example.com")
    factories.user("bob@example.com")
    groups.create_group(factories.ACTOR, "pro", "0.9")
    pro = factories.user("carol@example.com", group="pro")

    def found(query):
        page = text(as_operator.get("/admin/users/?" + query))
        return {e for e in ("ana@", "bob@", "carol@", "operator@") if f">{e}example.com</a>" in page}

    assert found("q=ana") == {"ana@"} and found(f"q={pro.id}") == {"carol@"}
    assert found("group=pro") == {"carol@"} and found("role=operator") == {"operator@"}
    assert "No user matches" in text(as_operator.get("/admin/users/?q=nobody"))
    assert ana.id


def test_the_user_page_shows_money_keys_usage_and_ledger(as_operator):
    user = factories.funded_user("12.5", email="dana@example.com")
    factories.api_key(user, name="laptop")
    runtime().quota.hold("req_open", user.account_id, 1, 250_000, None, 9e9)
    page = text(as_operator.get(f"/admin/users/{user.id}"))
    assert "$12.500000" in page and "$0.250000" in page  # settled balance, and the open hold
    assert "laptop" in page and "sk-sb-" in page and "test funds" in page


def test_top_up_asks_first_then_credits_sql_and_the_live_balance(as_operator):
    user = factories.user("eve@example.com")
    asked = post(as_operator, f"/admin/users/{user.id}/topup", {"amount": "20", "reason": "wire 4471"})
    assert "Add $20.00 to eve@example.com?" in text(asked)
    assert db.session.scalar(select(LedgerEntry.id)) is None
    assert post(as_operator, f"/admin/users/{user.id}/topup", {"amount": "20", "reason": "wire 4471"}, confirm=True).status_code == 302
    entry = db.session.scalar(select(LedgerEntry))
    assert (entry.kind, entry.amount, entry.reason) == ("topup", 20_000_000, "wire 4471")
    assert runtime().quota.account(user.account_id)[0] == 20_000_000
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "ledger.topup")).actor == "operator@example.com"


def test_bad_amounts_are_explained_and_change_nothing(as_operator):
    user = factories.user("fay@example.com")
    for amount, message in (("-5", "cannot be negative"), ("0", "more than zero"), ("lots", "Enter an amount"), ("1.0000001", "Enter an amount")):
        response = post(as_operator, f"/admin/users/{user.id}/topup", {"amount": amount, "reason": "x"}, confirm=True)
        assert response.status_code == 400 and message in text(response), amount
    missing_reason = post(as_operator, f"/admin/users/{user.id}/topup", {"amount": "5", "reason": ""}, confirm=True)
    assert missing_reason.status_code == 400 and "Say why" in text(missing_reason)
    assert db.session.scalar(select(LedgerEntry.id)) is None


def test_an_adjustment_can_take_money_away(as_operator):
    user = factories.funded_user("10", email="gus@example.com")
    asked = post(as_operator, f"/admin/users/{user.id}/adjust", {"amount": "-1.5", "reason": "duplicate top-up"})
    assert "Take $1.50 from the balance of gus@example.com?" in text(asked)
    post(as_operator, f"/admin/users/{user.id}/adjust", {"amount": "-1.5", "reason": "duplicate top-up"}, confirm=True)
    assert ledger.stored_balance(user.account_id) == 8_500_000


def test_change_group_and_only_an_admin_changes_roles(as_operator, as_admin):
    groups.create_group(factories.ACTOR, "pro", "0.9")
    user = factories.user("hal@example.com", password="a good password")
    post(as_operator, f"/admin/users/{user.id}/group", {"group": "pro"})
    db.session.refresh(user)
    assert user.group.name == "pro"
    assert post(as_operator, f"/admin/users/{user.id}/role", {"role": "support"}, confirm=True).status_code == 403
    version = user.session_version
    assert post(as_admin, f"/admin/users/{user.id}/role", {"role": "support"}, confirm=True).status_code == 302
    db.session.refresh(user)
    assert user.role == "support" and user.session_version == version + 1


def test_the_last_admin_cannot_be_demoted(app, as_admin, admin):
    response = post(as_admin, f"/admin/users/{admin.id}/role", {"role": "operator"}, confirm=True)
    assert response.status_code == 409 and "last admin" in text(response)
    db.session.refresh(admin)
    assert admin.role == "admin"


def test_disabling_a_user_ends_their_sessions(as_operator):
    user = factories.user("ivy@example.com")
    assert "Disable ivy@example.com?" in text(post(as_operator, f"/admin/users/{user.id}/status", {"active": "no"}))
    post(as_operator, f"/admin/users/{user.id}/status", {"active": "no"}, confirm=True)
    db.session.refresh(user)
    assert user.status == "disabled"
    post(as_operator, f"/admin/users/{user.id}/status", {"active": "yes"})
    db.session.refresh(user)
    assert user.status == "active"


def test_operators_cannot_disable_other_operators(as_operator):
    other = person("support", "help@example.com")
    assert post(as_operator, f"/admin/users/{other.id}/status", {"active": "no"}, confirm=True).status_code == 403


def test_create_a_user_from_the_console(as_operator):
    response = post(as_operator, "/admin/users/new", {"email": "New@Example.com", "password": "", "group": "default"})
    assert response.status_code == 302
    assert db.session.scalar(select(User).where(User.email == "new@example.com")) is not None
    duplicate = post(as_operator, "/admin/users/new", {"email": "new@example.com", "group": "default"})
    assert duplicate.status_code == 409 and "already exists" in text(duplicate)


def test_support_reads_a_user_but_sees_no_money_forms(as_support):
    user = factories.funded_user("3")
    page = text(as_support.get(f"/admin/users/{user.id}"))
    assert "$3.000000" in page and "Top up" not in page and "Ban user" not in page


def test_an_operator_creates_a_key_for_a_user_shown_once(as_operator, as_support):
    import re

    from controlplane.models import ApiKey
    from controlplane.services.keys import hash_secret

    user = factories.funded_user("5", email="kim@example.com")
    assert "Create a key for kim@example.com" in text(as_operator.get(f"/admin/users/{user.id}"))
    assert "Create a key for" not in text(as_support.get(f"/admin/users/{user.id}"))  # support reads only
    refused = post(as_operator, f"/admin/users/{user.id}/keys", {"name": "server", "credit_limit": "-1", "models": ""})
    assert refused.status_code == 400 and db.session.scalar(select(ApiKey.id)) is None
    created = post(as_operator, f"/admin/users/{user.id}/keys", {"name": "server", "credit_limit": "2", "models": "gpt-4o-mini"})
    assert created.status_code == 200 and created.headers["Cache-Control"] == "no-store"
    secret = re.search(r"sk-sb-[A-Za-z0-9]{40}", text(created)).group(0)
    key = db.session.scalar(select(ApiKey))
    assert key.user_id == user.id and key.account_id == user.account_id and key.name == "server" and key.credit_limit == 2_000_000
    assert key.models == ["gpt-4o-mini"] and key.key_hash == hash_secret(secret)
    assert secret not in text(as_operator.get(f"/admin/users/{user.id}")) and ">server<" in text(as_operator.get(f"/admin/users/{user.id}"))
    assert runtime().redis.exists(f"sb:akey:{key.id}")  # the relays know it at once
    assert post(as_support, f"/admin/users/{user.id}/keys", {"name": "x"}).status_code == 403
