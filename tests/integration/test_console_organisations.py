"""Organisations from the operator's side, in the console and the admin API: search, the page
(members and roles, balance, keys, usage, ledger), top-ups, adjustments and goodwill that confirm
first and land in the ledger (both SQL back ends), and bans that reach every key of the organisation."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.key_records import records_for
from controlplane.models import AuditEntry, Ban, EntryKind, LedgerEntry, Refund
from controlplane.runtime import runtime
from controlplane.services import api_tokens, billing, keys, organisations
from tests import factories
from tests.console import as_operator, as_support, operator, person, post, sign_in, support, text  # noqa: F401


def org_with_member(name: str = "Acme", owner_email: str | None = None):
    owner = factories.user(owner_email)
    org = organisations.create_organisation(factories.ACTOR, owner, name)
    member = factories.user()
    by = organisations.membership(org.id, owner.id)
    _, token = organisations.invite(factories.ACTOR, by, None, "member")
    joined = organisations.accept(factories.ACTOR, member, organisations.open_invitation(token))
    organisations.set_allowance(factories.ACTOR, by, joined.id, "5")
    return org, owner, member


@pytest.fixture
def staff(sql_app):
    return sign_in(sql_app.test_client(), person("operator"))


def test_search_by_name_or_id_and_banned_only(as_operator):
    acme, _, _ = org_with_member("Acme Labs")
    beta, _, _ = org_with_member("Beta GmbH")

    def found(query):
        page = text(as_operator.get("/admin/organisations/?" + query))
        return {n for n in ("Acme Labs", "Beta GmbH") if f">{n}</a>" in page}

    assert found("") == {"Acme Labs", "Beta GmbH"}
    assert found("q=acme") == {"Acme Labs"} and found(f"q={beta.id}") == {"Beta GmbH"}
    from controlplane.services import bans

    bans.ban(factories.ACTOR, "org", "Beta GmbH", "unpaid")
    assert found("banned=yes") == {"Beta GmbH"}
    assert "No organisation matches" in text(as_operator.get("/admin/organisations/?q=nothing"))
    assert acme.id


def test_the_page_shows_members_roles_keys_usage_and_ledger(as_operator):
    org, owner, member = org_with_member("Acme", "owner@acme.example")
    billing.topup(factories.ACTOR, org, "25", "invoice 7")
    keys.create_key(factories.ACTOR, member, "ci runner", account_id=org.id)
    page = text(as_operator.get(f"/admin/organisations/{org.id}"))
    assert "owner@acme.example" in page and ">owner<" in page and ">member<" in page
    assert "$5.00" in page  # the member's monthly allowance
    assert "ci runner" in page and "invoice 7" in page and "$25.000000" in page
    assert as_operator.get(f"/admin/organisations/{owner.account_id}").status_code == 404  # a personal account is not an organisation


def test_top_up_asks_first_then_credits_the_ledger_and_live_balance(staff):
    org, _, _ = org_with_member("Acme")
    asked = post(staff, f"/admin/organisations/{org.id}/topup", {"amount": "40", "reason": "wire 99"})
    assert "Add $40.00 to the organisation Acme?" in text(asked)
    assert db.session.scalar(select(LedgerEntry.id)) is None
    assert post(staff, f"/admin/organisations/{org.id}/topup", {"amount": "40", "reason": "wire 99"}, confirm=True).status_code == 302
    entry = db.session.scalar(select(LedgerEntry))
    assert (entry.account_id, entry.kind, entry.amount, entry.reason) == (org.id, "topup", 40_000_000, "wire 99")
    assert runtime().quota.account(org.id)[0] == 40_000_000
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "ledger.topup")).target_id == str(org.id)


def test_adjust_and_goodwill_confirm_and_post_one_entry_each(staff):
    org, _, _ = org_with_member("Acme")
    billing.topup(factories.ACTOR, org, "10", "start")
    asked = post(staff, f"/admin/organisations/{org.id}/adjust", {"amount": "-2.5", "reason": "duplicate"})
    assert "Take $2.50 from the balance of the organisation Acme?" in text(asked)
    post(staff, f"/admin/organisations/{org.id}/adjust", {"amount": "-2.5", "reason": "duplicate"}, confirm=True)
    asked = post(staff, f"/admin/organisations/{org.id}/goodwill", {"amount": "1", "reason": "outage"})
    assert "Give $1.00 of credit to the organisation Acme?" in text(asked)
    post(staff, f"/admin/organisations/{org.id}/goodwill", {"amount": "1", "reason": "outage"}, confirm=True)
    assert ledger.stored_balance(org.id) == 8_500_000 == ledger.sum_of_entries(org.id)
    assert db.session.scalar(select(Refund)).kind == "goodwill"


def test_bad_input_is_explained_and_changes_nothing(as_operator):
    org, _, _ = org_with_member("Acme")
    for path, amount, message in (("topup", "-5", "cannot be negative"), ("adjust", "lots", "Enter an amount"), ("goodwill", "0", "more than zero")):
        response = post(as_operator, f"/admin/organisations/{org.id}/{path}", {"amount": amount, "reason": "x"}, confirm=True)
        assert response.status_code == 400 and message in text(response), path
    assert db.session.scalar(select(LedgerEntry.id)) is None


def test_support_reads_but_does_not_move_money_or_ban(as_support):
    org, _, _ = org_with_member("Acme")
    assert as_support.get(f"/admin/organisations/{org.id}").status_code == 200
    assert post(as_support, f"/admin/organisations/{org.id}/topup", {"amount": "1", "reason": "x"}, confirm=True).status_code == 403
    assert post(as_support, f"/admin/organisations/{org.id}/ban", {"reason": "x"}, confirm=True).status_code == 403


def test_a_ban_confirms_reaches_every_key_record_and_lifts(as_operator):
    org, owner, member = org_with_member("Acme")
    key, _ = keys.create_key(factories.ACTOR, member, "k", account_id=org.id)
    own, _ = keys.create_key(factories.ACTOR, member, "own")
    asked = post(as_operator, f"/admin/organisations/{org.id}/ban", {"reason": "fraud"})
    assert "Ban the organisation Acme until someone lifts the ban?" in text(asked)
    assert db.session.scalar(select(Ban.id)) is None
    post(as_operator, f"/admin/organisations/{org.id}/ban", {"reason": "fraud"}, confirm=True)
    records = {r.id: r.view for batch in records_for([key.id, own.id]) for r in batch}
    assert records[key.id].banned_at(0) == "user" and records[own.id].banned_at(0) is None
    assert "fraud" in text(as_operator.get(f"/admin/organisations/{org.id}"))
    assert "Acme" in text(as_operator.get("/admin/bans/"))
    post(as_operator, f"/admin/organisations/{org.id}/unban")
    records = {r.id: r.view for batch in records_for([key.id]) for r in batch}
    assert records[key.id].banned_at(0) is None
    assert owner.id


def test_the_admin_api_mirrors_the_console(sql_app):
    _, secret = api_tokens.create_token(factories.ACTOR, person("operator", "script@example.com"), "ci")
    api = sql_app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    org, owner, member = org_with_member("Acme API")
    keys.create_key(factories.ACTOR, member, "k", account_id=org.id)
    listed = api.get("/admin/api/v1/organisations?q=acme").json
    assert [(o["name"], o["members"]) for o in listed["data"]] == [("Acme API", 2)]
    assert api.post(f"/admin/api/v1/organisations/{org.id}/topup", json={"amount_usd": "3", "reason": "po 1"}).status_code == 201
    assert api.post(f"/admin/api/v1/organisations/{org.id}/adjust", json={"amount_usd": "-1", "reason": "fix"}).status_code == 201
    assert api.post(f"/admin/api/v1/organisations/{org.id}/goodwill", json={"amount_usd": "0.5", "reason": "sorry"}).status_code == 201
    bad = api.post(f"/admin/api/v1/organisations/{org.id}/topup", json={"amount_usd": "-3", "reason": "x"})
    assert bad.status_code == 400 and bad.json["error"]["param"] == "amount"
    one = api.get(f"/admin/api/v1/organisations/{org.id}").json
    assert one["balance_micro_usd"] == 2_500_000 and one["banned"] is False
    assert {(m["email"], m["role"]) for m in one["members"]} == {(owner.email, "owner"), (member.email, "member")}
    assert [k["name"] for k in one["keys"]] == ["k"]
    ledger_kinds = [e["kind"] for e in api.get(f"/admin/api/v1/organisations/{org.id}/ledger").json["data"]]
    assert ledger_kinds == [EntryKind.GOODWILL.value, "adjustment", "topup"]
    assert api.post(f"/admin/api/v1/organisations/{org.id}/ban", json={"reason": "abuse"}).status_code == 201
    assert api.get(f"/admin/api/v1/organisations/{org.id}").json["banned"] is True
    assert api.post(f"/admin/api/v1/organisations/{org.id}/unban").json == {"lifted": 1}
    assert api.get(f"/admin/api/v1/organisations/{owner.account_id}").status_code == 404
    assert api.get(f"/admin/api/v1/organisations/{org.id}/usage").json == {"data": []}
    member_id = next(m["member_id"] for m in one["members"] if m["role"] == "member")
    assert api.patch(f"/admin/api/v1/organisations/{org.id}/members/{member_id}", json={"role": "admin"}).json["role"] == "admin"
    owner_id = next(m["member_id"] for m in one["members"] if m["role"] == "owner")
    assert api.patch(f"/admin/api/v1/organisations/{org.id}/members/{owner_id}", json={"role": "member"}).status_code == 409


def test_members_see_in_their_console_why_the_organisations_keys_are_refused(app):
    from controlplane.services import bans
    from tests.helpers import login, post_form

    owner = factories.user("owner@example.com", password="correct horse battery")
    org = organisations.create_organisation(factories.ACTOR, owner, "Acme")
    bans.ban(factories.ACTOR, "org", str(org.id), "unpaid invoice")
    client = app.test_client()
    login(client, owner.email, "correct horse battery")
    assert "unpaid invoice" not in text(client.get("/"))  # their personal account is not banned
    assert post_form(client, "/account/switch", {"account_id": str(org.id)}, token_from="/").status_code == 302
    assert "unpaid invoice" in text(client.get("/"))


def test_an_operator_hands_an_organisation_to_a_new_owner_and_it_keeps_one(as_operator):
    org, owner, member = org_with_member("Acme")
    owner_row, member_row = organisations.membership(org.id, owner.id), organisations.membership(org.id, member.id)
    refused = post(as_operator, f"/admin/organisations/{org.id}/members/{owner_row.id}/role", {"role": "member"})
    assert refused.status_code == 302 and "needs an owner" in text(as_operator.get(f"/admin/organisations/{org.id}"))
    post(as_operator, f"/admin/organisations/{org.id}/members/{member_row.id}/role", {"role": "owner"})
    post(as_operator, f"/admin/organisations/{org.id}/members/{owner_row.id}/role", {"role": "member"})
    db.session.expire_all()
    assert (organisations.membership(org.id, member.id).role, organisations.membership(org.id, owner.id).role) == ("owner", "member")
    assert [a.after["role"] for a in db.session.scalars(select(AuditEntry).where(AuditEntry.action == "org.role").order_by(AuditEntry.id))] == [
        "owner", "member"]
    other, _, _ = org_with_member("Other")
    assert post(as_operator, f"/admin/organisations/{other.id}/members/{member_row.id}/role", {"role": "admin"}).status_code == 404


def test_an_operator_closes_an_organisation_and_its_money_stays(staff, sql_app):
    from controlplane.models import Account, ApiKey, Membership
    from relay import keys as rk

    org, owner, member = org_with_member("Acme")
    billing.topup(factories.ACTOR, org, "30", "po 5")
    key, _ = keys.create_key(factories.ACTOR, member, "k", account_id=org.id)
    own, _ = keys.create_key(factories.ACTOR, member, "own")
    asked = post(staff, f"/admin/organisations/{org.id}/close", {"reason": "contract ended"})
    assert "Close the organisation Acme? Its 1 API key(s) stop at once and its 2 member(s) leave." in text(asked)
    assert "$30.00 stays on the closed account" in text(asked)
    assert post(staff, f"/admin/organisations/{org.id}/close", {"reason": "contract ended"}, confirm=True).status_code == 302
    db.session.expire_all()
    assert db.session.get(Account, org.id).closed_at is not None
    assert db.session.get(ApiKey, key.id).status == "deleted" and db.session.get(ApiKey, own.id).status == "enabled"
    assert not runtime().redis.exists(rk.record_key(key.key_hash))
    assert db.session.scalar(select(Membership.id).where(Membership.account_id == org.id)) is None
    assert ledger.stored_balance(org.id) == 30_000_000 == ledger.sum_of_entries(org.id)
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "organisation.close"))
    assert audit.after["unused_balance_micro_usd"] == 30_000_000 and audit.after["members_removed"] == 2
    assert "Closed" in text(staff.get(f"/admin/organisations/{org.id}"))
    _, secret = api_tokens.create_token(factories.ACTOR, person("operator", "script@example.com"), "ci")
    again = sql_app.test_client().post(f"/admin/api/v1/organisations/{org.id}/close", json={"reason": "twice"},
                                       headers={"Authorization": f"Bearer {secret}"})
    assert again.status_code == 409
    assert owner.id
