"""Organisations in the console: create, invite by link or email, join, roles, allowances,
removal; members' keys charge the organisation, and its owners see one bill."""
from __future__ import annotations

import re

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ApiKey, Invitation, Membership
from controlplane.services import organisations
from tests import factories
from tests.helpers import csrf_token, post_form

from .conftest import client_for, person

LINK = re.compile(r'value="(http://localhost/invitations/[^"]+)"')


def create_org(client, name="Acme"):
    return post_form(client, "/organisation/new", {"name": name}, token_from="/organisation")


def invite(client, email="", role="member"):
    response = post_form(client, "/organisation/invitations", {"email": email, "role": role}, token_from="/organisation")
    return response, LINK.search(response.get_data(as_text=True))


def test_create_invite_by_link_join_and_charge_the_organisation(app, ana, as_ana, served):
    assert create_org(as_ana).status_code == 302
    home = as_ana.get("/").get_data(as_text=True)
    assert "<h1>Acme</h1>" in home and "Acme (owner)" in home
    response, link = invite(as_ana)
    assert response.status_code == 200 and link
    bob = person("bob@example.com")
    as_bob = client_for(app, bob)
    path = link.group(1).replace("http://localhost", "")
    assert "Join Acme" in as_bob.get(path).get_data(as_text=True)
    assert post_form(as_bob, path, {}, token_from=path).status_code == 302
    org = db.session.scalar(select(Membership).where(Membership.user_id == bob.id)).account
    # Bob now works in Acme: a key he creates there charges Acme.
    post_form(as_bob, "/keys/new", {"name": "bob-at-acme"})
    key = db.session.scalar(select(ApiKey).where(ApiKey.name == "bob-at-acme"))
    assert (key.account_id, key.user_id) == (org.id, bob.id)
    assert as_bob.get(path).status_code == 404  # the link worked once


def test_an_email_invitation_is_for_that_address_only(app, ana, as_ana):
    create_org(as_ana)
    _, link = invite(as_ana, "carol@example.com")
    path = link.group(1).replace("http://localhost", "")
    dave = client_for(app, person("dave@example.com"))
    refused = post_form(dave, path, {}, token_from=path)
    assert refused.status_code == 403 and "carol@example.com" in refused.get_data(as_text=True)
    carol = client_for(app, person("carol@example.com"))
    assert post_form(carol, path, {}, token_from=path).status_code == 302


def test_an_invitation_link_can_sign_up_someone_new(app, ana, as_ana, client):
    create_org(as_ana)
    _, link = invite(as_ana, role="admin")
    token = link.group(1).rsplit("/", 1)[1]
    page = client.get(f"/invitations/{token}").get_data(as_text=True)
    assert "Create an account" in page and "Sign in to join" in page
    response = post_form(client, f"/signup?invite={token}", {"email": "erin@example.com", "password": "a long password",
                                                             "confirm": "a long password"}, token_from="/login")
    assert response.status_code == 302
    erin = db.session.scalar(select(Membership).join(Membership.user).where(Membership.role == "admin"))
    assert erin.user.email == "erin@example.com"


def test_roles_and_allowances_follow_the_rules(app, ana, as_ana, served):
    create_org(as_ana)
    org_id = db.session.scalar(select(Membership.account_id).where(Membership.user_id == ana.id))
    owner = organisations.membership(org_id, ana.id)
    bob, carol = person("bob@example.com"), person("carol@example.com")
    for user, role in ((bob, "admin"), (carol, "member")):
        _, token = organisations.invite(factories.ACTOR, owner, None, role)
        organisations.accept(factories.ACTOR, user, organisations.open_invitation(token))
    as_bob = client_for(app, bob)
    as_bob.post("/account/switch", data={"account_id": str(org_id), "csrf_token": csrf_token(as_bob, "/organisation")})
    carols = organisations.membership(org_id, carol.id)
    # An admin sets allowances but cannot change roles or remove the owner.
    assert post_form(as_bob, f"/organisation/members/{carols.id}/allowance", {"allowance": "12.5"}, token_from="/organisation").status_code == 302
    assert organisations.membership(org_id, carol.id).monthly_allowance == 12_500_000
    assert "12.5" in as_bob.get("/organisation").get_data(as_text=True)
    assert post_form(as_bob, f"/organisation/members/{carols.id}/role", {"role": "admin"}, token_from="/organisation").status_code == 403
    assert post_form(as_bob, f"/organisation/members/{owner.id}/remove", {}, token_from="/organisation").status_code == 403
    # The last owner cannot leave or step down.
    assert post_form(as_ana, f"/organisation/members/{owner.id}/role", {"role": "member"}, token_from="/organisation").status_code == 409
    assert post_form(as_ana, f"/organisation/members/{owner.id}/remove", {}, token_from="/organisation").status_code == 409
    # Removing a member disables their keys on the organisation.
    key, _ = factories.api_key(carol, account_id=org_id)
    assert post_form(as_bob, f"/organisation/members/{carols.id}/remove", {}, token_from="/organisation").status_code == 302
    assert db.session.get(ApiKey, key.id).status == "disabled"
    assert organisations.membership(org_id, carol.id) is None


def test_a_member_can_leave(app, ana, as_ana):
    create_org(as_ana)
    org_id = db.session.scalar(select(Membership.account_id).where(Membership.user_id == ana.id))
    bob = person("bob@example.com")
    _, token = organisations.invite(factories.ACTOR, organisations.membership(org_id, ana.id), None, "member")
    mine = organisations.accept(factories.ACTOR, bob, organisations.open_invitation(token))
    as_bob = client_for(app, bob)
    as_bob.post("/account/switch", data={"account_id": str(org_id), "csrf_token": csrf_token(as_bob, "/organisation")})
    assert post_form(as_bob, f"/organisation/members/{mine.id}/remove", {}, token_from="/organisation").status_code == 302
    assert "not in any organisation" in as_bob.get("/organisation").get_data(as_text=True)


def test_a_member_cannot_invite(app, ana, as_ana):
    create_org(as_ana)
    org_id = db.session.scalar(select(Membership.account_id).where(Membership.user_id == ana.id))
    bob = person("bob@example.com")
    _, token = organisations.invite(factories.ACTOR, organisations.membership(org_id, ana.id), None, "member")
    organisations.accept(factories.ACTOR, bob, organisations.open_invitation(token))
    as_bob = client_for(app, bob)
    as_bob.post("/account/switch", data={"account_id": str(org_id), "csrf_token": csrf_token(as_bob, "/organisation")})
    response = post_form(as_bob, "/organisation/invitations", {"email": "", "role": "member"}, token_from="/organisation")
    assert response.status_code == 403
    assert db.session.scalar(select(db.func.count()).select_from(Invitation)) == 1
