"""Sign-up (open, invite-only, closed), sign-in rotation, password and email changes, and the
session list with "log out everywhere"."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sqlalchemy import select
from werkzeug.security import check_password_hash

from controlplane.extensions import db
from controlplane.models import Account, AuditEntry, Group, User, UserSession
from controlplane.services import organisations
from tests import factories
from tests.helpers import csrf_token, login, post_form

from .conftest import PASSWORD, client_for, organisation, person


@pytest.fixture
def signup_mode(app):
    """Switch the operator's sign-up setting for one test."""
    original = app.config["SWITCHBOARD"]

    def set_mode(mode: str):
        app.config["SWITCHBOARD"] = replace(original, signup=mode)

    yield set_mode
    app.config["SWITCHBOARD"] = original


def sign_up(client, email="new@example.com", password="a long password", confirm=None, path="/signup"):
    return post_form(client, path, {"email": email, "password": password, "confirm": confirm or password}, token_from="/login")


def test_open_sign_up_creates_a_user_with_an_empty_account_and_signs_them_in(client):
    response = sign_up(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    user = db.session.scalar(select(User).where(User.email == "new@example.com"))
    assert user.role == "user" and user.account.balance == 0 and check_password_hash(user.password_hash, "a long password")
    assert "Welcome to Switchboard" in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("data,message", [
    ({"email": "not-an-email"}, "Enter an email address"),
    ({"password": "short", "confirm": "short"}, "at least 8 characters"),
    ({"confirm": "something else"}, "The passwords differ"),
])
def test_an_invalid_sign_up_explains_and_creates_nothing(client, data, message):
    fields = {"email": "new@example.com", "password": "a long password", "confirm": "a long password", **data}
    response = post_form(client, "/signup", fields, token_from="/login")
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert db.session.scalar(select(User.id)) is None


def test_sign_up_with_a_taken_email_is_refused(client):
    person("taken@example.com")
    response = sign_up(client, "taken@example.com")
    assert response.status_code == 409
    assert db.session.scalar(select(db.func.count()).select_from(User)) == 1


def test_closed_sign_up_refuses_even_with_a_form(client, signup_mode):
    signup_mode("closed")
    assert client.get("/signup").status_code == 403
    assert "Sign-up is closed" in client.get("/signup").get_data(as_text=True)
    response = client.post("/signup", data={"email": "x@example.com", "password": "a long password", "confirm": "a long password",
                                            "csrf_token": csrf_token(client, "/login")})
    assert response.status_code == 403 and db.session.scalar(select(User.id)) is None


def test_invite_only_sign_up_needs_an_invitation_that_works_once(app, client, signup_mode):
    signup_mode("invite")
    assert sign_up(client).status_code == 403
    owner = person("owner@example.com")
    org = organisation(owner)
    _, token = organisations.invite(factories.ACTOR, organisations.membership(org.id, owner.id), None, "member")
    response = sign_up(client, "invited@example.com", path=f"/signup?invite={token}")
    assert response.status_code == 302
    joined = db.session.scalar(select(User).where(User.email == "invited@example.com"))
    assert organisations.membership(org.id, joined.id).role == "member"
    again = sign_up(app.test_client(), "second@example.com", path=f"/signup?invite={token}")
    assert again.status_code == 403  # used: no longer an invitation


def test_sign_up_is_throttled_per_address(client):
    for i in range(5):
        assert sign_up(client, f"n{i}@example.com").status_code == 302
        client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert sign_up(client, "n6@example.com").status_code == 429


def test_sign_in_rotates_the_session_and_records_it(app, ana):
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as before:
        before["planted"] = "by an attacker"
    login(client, ana.email, PASSWORD)
    with client.session_transaction() as after:
        assert "planted" not in after and after.get("sid")
    row = db.session.scalar(select(UserSession).where(UserSession.user_id == ana.id))
    assert row.revoked_at is None and row.token_hash != after["sid"]


def test_the_session_list_can_end_another_session(app, ana):
    laptop, phone = client_for(app, ana), client_for(app, ana)
    page = laptop.get("/account").get_data(as_text=True)
    assert page.count('/end" class="inline">') == 1 and "this browser" in page  # a button for the other session, not this one
    other = db.session.scalars(select(UserSession).where(UserSession.user_id == ana.id).order_by(UserSession.id)).all()[1]
    assert post_form(laptop, f"/account/sessions/{other.id}/end", {}, token_from="/account").status_code == 302
    assert phone.get("/keys/").status_code == 302  # signed out
    assert laptop.get("/keys/").status_code == 200


def test_another_users_session_cannot_be_ended(app, ana, bob):
    client_for(app, bob)
    bobs = db.session.scalar(select(UserSession).where(UserSession.user_id == bob.id))
    as_ana = client_for(app, ana)
    assert post_form(as_ana, f"/account/sessions/{bobs.id}/end", {}, token_from="/account").status_code == 404
    assert db.session.get(UserSession, bobs.id).revoked_at is None


def test_log_out_everywhere_ends_every_session_including_this_one(app, ana):
    laptop, phone = client_for(app, ana), client_for(app, ana)
    response = post_form(laptop, "/account/sessions/end-all", {}, token_from="/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert laptop.get("/keys/").status_code == 302 and phone.get("/keys/").status_code == 302
    assert db.session.scalar(select(db.func.count()).select_from(UserSession).where(UserSession.revoked_at.is_(None))) == 0


def test_a_password_change_keeps_this_session_and_ends_the_others(app, ana):
    laptop, phone = client_for(app, ana), client_for(app, ana)
    wrong = post_form(laptop, "/account/password", {"current_password": "nope", "new_password": "another long one", "confirm": "another long one"},
                      token_from="/account")
    assert wrong.status_code == 400 and "not your current password" in wrong.get_data(as_text=True)
    ok = post_form(laptop, "/account/password", {"current_password": PASSWORD, "new_password": "another long one", "confirm": "another long one"},
                   token_from="/account")
    assert ok.status_code == 302
    assert laptop.get("/keys/").status_code == 200
    assert phone.get("/keys/").status_code == 302
    assert login(app.test_client(), ana.email, "another long one").status_code == 302


def test_a_profile_update_cannot_change_role_group_balance_or_status(app, ana):
    vip = Group(name="vip", multiplier_bp=5_000)
    db.session.add(vip)
    db.session.commit()
    client = client_for(app, ana)
    response = post_form(client, "/account/email", {"email": "ana.new@example.com", "password": PASSWORD, "role": "admin", "group_id": vip.id,
                                                    "group": "vip", "balance": "1000000", "status": "active", "account_id": 1}, token_from="/account")
    assert response.status_code == 302
    db.session.refresh(ana)
    assert (ana.email, ana.role, ana.group.name, ana.status) == ("ana.new@example.com", "user", "default", "active")
    assert db.session.get(Account, ana.account_id).balance == 10_000_000
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "user.email")).before == {"email": "ana@example.com"}


def test_an_email_change_needs_the_password_and_a_free_address(app, ana, bob):
    client = client_for(app, ana)
    assert post_form(client, "/account/email", {"email": "x@example.com", "password": "wrong"}, token_from="/account").status_code == 400
    assert post_form(client, "/account/email", {"email": bob.email, "password": PASSWORD}, token_from="/account").status_code == 400
    db.session.refresh(ana)
    assert ana.email == "ana@example.com"


def test_forms_without_a_csrf_token_are_refused(app, ana):
    client = client_for(app, ana)
    assert client.post("/account/sessions/end-all").status_code == 400
    assert client.post("/keys/new", data={"name": "x"}).status_code == 400


def test_operators_are_sent_to_their_own_console(app, client):
    from controlplane.models import Role
    from controlplane.services import users

    users.create_operator(factories.ACTOR, "op@example.com", PASSWORD, Role.OPERATOR)
    login(client, "op@example.com", PASSWORD)
    assert client.get("/").headers["Location"] == "/admin/"
    assert client.get("/keys/").headers["Location"] == "/admin/"


def test_an_operators_sign_up_link_admits_one_person_while_sign_up_is_invite_only(app, client, signup_mode):
    signup_mode("invite")
    from controlplane.cli.group import cli

    result = app.test_cli_runner().invoke(cli, ["invite", "--email", "guest@example.com", "--json"])
    assert result.exit_code == 0, result.output
    link = json.loads(result.output.strip().splitlines()[-1])["link"]
    path = link[link.index("/signup"):]
    assert sign_up(client, "someone.else@example.com", path=path).status_code == 400  # the link names its address
    assert sign_up(client, "guest@example.com", path=path).status_code == 302
    assert db.session.scalar(select(User.id).where(User.email == "guest@example.com")) is not None
