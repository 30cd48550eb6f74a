"""Two-factor sign-in end to end through the consoles: enrolment, the code step at sign-in,
recovery codes, replay, turning it off, admins held at enrolment when it is required, and the
operator's own session list."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
from sqlalchemy import select

from controlplane import auth, totp
from controlplane.extensions import db
from controlplane.models import AuditEntry, RecoveryCode, Role, User, UserSession
from controlplane.services import users
from tests import factories
from tests.helpers import csrf_token, login, post_form

PASSWORD = "correct horse battery"
CODES = re.compile(r'<textarea id="recovery-codes"[^>]*>([^<]*)</textarea>')


def secret_of(user: User) -> str:
    from controlplane.runtime import runtime

    db.session.refresh(user)
    return runtime().cipher.decrypt(user.totp_secret)


def now_code(secret: str, offset: int = 0) -> str:
    return totp.code_at(secret, totp.current_step() + offset)


def actions(user: User) -> list[str]:
    return list(db.session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == str(user.id), AuditEntry.action.like("two_factor.%"))
                                   .order_by(AuditEntry.id)))


def signed_in(client) -> bool:
    return client.get("/account").status_code == 200


def enrol(client, prefix: str = "/account") -> tuple[str, list[str]]:
    """Turn two-factor sign-in on through the pages; returns the secret and the recovery codes."""
    assert post_form(client, f"{prefix}/two-factor/start", {}, token_from=f"{prefix}/two-factor").status_code == 302
    page = client.get(f"{prefix}/two-factor").get_data(as_text=True)
    secret = re.search(r'id="totp-secret" type="text" readonly value="([A-Z2-7]+)"', page).group(1)
    response = post_form(client, f"{prefix}/two-factor/confirm", {"code": now_code(secret)}, token_from=f"{prefix}/two-factor")
    assert response.status_code == 200, response.get_data(as_text=True)
    return secret, CODES.search(response.get_data(as_text=True)).group(1).split()


def code_step(client, code: str, ip: str = "198.51.100.1"):
    return client.post("/login/code", data={"csrf_token": csrf_token(client, "/login/code"), "code": code}, environ_base={"REMOTE_ADDR": ip})


@pytest.fixture
def ana(sql_app):
    return factories.user("ana@example.com", password=PASSWORD)


@pytest.fixture
def enrolled(sql_app, ana):
    """Ana with two-factor sign-in on: (user, secret, recovery codes); her setup client is gone."""
    client = sql_app.test_client()
    login(client, ana.email, PASSWORD)
    secret, codes = enrol(client)
    return ana, secret, codes


def test_enrolment_refuses_a_wrong_code_and_turns_on_with_the_right_one(sql_app, ana):
    client = sql_app.test_client()
    login(client, ana.email, PASSWORD)
    assert "Set up two-factor sign-in" in client.get("/account").get_data(as_text=True)
    post_form(client, "/account/two-factor/start", {}, token_from="/account/two-factor")
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert 'src="data:image/svg+xml' in page and "otpauth://totp/Switchboard:ana%40example.com" in page
    secret = secret_of(ana)
    assert secret in page and ana.totp_secret != secret  # shown to its owner, encrypted at rest

    wrong = str((int(now_code(secret)) + 1) % 1_000_000).zfill(6)
    response = post_form(client, "/account/two-factor/confirm", {"code": wrong}, token_from="/account/two-factor")
    assert response.status_code == 400 and "does not match" in response.get_data(as_text=True)
    db.session.refresh(ana)
    assert not ana.two_factor_enabled and actions(ana) == []

    response = post_form(client, "/account/two-factor/confirm", {"code": now_code(secret)}, token_from="/account/two-factor")
    codes = CODES.search(response.get_data(as_text=True)).group(1).split()
    db.session.refresh(ana)
    assert response.status_code == 200 and ana.two_factor_enabled and len(codes) == 10
    stored = set(db.session.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == ana.id)))
    assert stored == {totp.recovery_hash(c) for c in codes} and not stored & set(codes)  # hashes only
    assert actions(ana) == ["two_factor.enable"]
    assert codes[0] not in client.get("/account/two-factor").get_data(as_text=True)  # shown once


def test_sign_in_asks_for_the_code_before_any_session_exists(sql_app, enrolled):
    ana, secret, _ = enrolled
    client = sql_app.test_client()
    sessions_before = db.session.scalar(select(db.func.count()).select_from(UserSession).where(UserSession.user_id == ana.id))
    response = login(client, ana.email, PASSWORD)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login/code")
    assert not signed_in(client)
    assert code_step(client, "000000" if now_code(secret) != "000000" else "111111").status_code == 401
    assert not signed_in(client)
    response = code_step(client, now_code(secret, 1))
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert signed_in(client)
    assert db.session.scalar(select(db.func.count()).select_from(UserSession).where(UserSession.user_id == ana.id)) == sessions_before + 1


def test_a_code_is_refused_the_second_time(sql_app, enrolled):
    ana, secret, _ = enrolled
    first = sql_app.test_client()
    login(first, ana.email, PASSWORD)
    code = now_code(secret, 1)
    assert code_step(first, code).status_code == 302
    second = sql_app.test_client()
    login(second, ana.email, PASSWORD)
    assert code_step(second, code).status_code == 401  # same step: a replay
    assert code_step(second, now_code(secret)).status_code == 401  # the step enrolment used, older still


def test_a_recovery_code_signs_in_once_and_is_audited(sql_app, enrolled):
    ana, _, codes = enrolled
    client = sql_app.test_client()
    login(client, ana.email, PASSWORD)
    response = code_step(client, codes[3].upper())
    assert response.status_code == 302 and "9 left" in client.get("/").get_data(as_text=True)
    assert actions(ana) == ["two_factor.enable", "two_factor.recovery_used"]
    again = sql_app.test_client()
    login(again, ana.email, PASSWORD)
    assert code_step(again, codes[3]).status_code == 401 and not signed_in(again)


def test_the_code_step_expires_and_shares_the_sign_in_throttle(app, monkeypatch):
    ana = factories.user("ana@example.com", password=PASSWORD)
    setup = app.test_client()
    login(setup, ana.email, PASSWORD)
    secret, _ = enrol(setup)
    monkeypatch.setitem(app.config, "SWITCHBOARD", replace(app.config["SWITCHBOARD"], login_attempts_per_minute=2))
    client = app.test_client()
    login(client, ana.email, PASSWORD)
    assert code_step(client, "abcdef", ip="203.0.113.9").status_code == 401
    assert code_step(client, "abcdef", ip="203.0.113.9").status_code == 401
    assert code_step(client, now_code(secret, 1), ip="203.0.113.9").status_code == 429  # refused before the code is looked at

    late = app.test_client()
    login(late, ana.email, PASSWORD)
    monkeypatch.setattr(auth, "PENDING_SECONDS", -1)
    response = late.get("/login/code")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert not response.headers["Location"].startswith("/login/code")


def test_turning_it_off_needs_the_password_and_a_code(sql_app, enrolled):
    ana, secret, codes = enrolled
    client = sql_app.test_client()
    login(client, ana.email, PASSWORD)
    code_step(client, now_code(secret, 1))
    for fields in ({"password": "wrong password", "code": now_code(secret, 1)}, {"password": PASSWORD, "code": "123456"}, {"password": PASSWORD}):
        assert post_form(client, "/account/two-factor/disable", fields, token_from="/account/two-factor").status_code == 400
        db.session.refresh(ana)
        assert ana.two_factor_enabled
    response = post_form(client, "/account/two-factor/disable", {"password": PASSWORD, "code": codes[0]}, token_from="/account/two-factor")
    assert response.status_code == 302
    db.session.refresh(ana)
    assert not ana.two_factor_enabled and ana.totp_secret is None
    assert db.session.scalar(select(RecoveryCode.id).where(RecoveryCode.user_id == ana.id)) is None
    assert actions(ana)[-1] == "two_factor.disable"
    again = sql_app.test_client()
    assert login(again, ana.email, PASSWORD).headers["Location"] == "/"  # one step again


def test_an_admin_is_held_at_enrolment_when_two_factor_is_required(app, monkeypatch):
    monkeypatch.setitem(app.config, "SWITCHBOARD", replace(app.config["SWITCHBOARD"], require_2fa=True))
    admin = users.create_operator(factories.ACTOR, "root@example.com", PASSWORD, Role.ADMIN)
    support = users.create_operator(factories.ACTOR, "help@example.com", PASSWORD, Role.SUPPORT)
    client = app.test_client()
    login(client, admin.email, PASSWORD)
    for path in ("/admin/channels/", "/admin/account/", "/admin/operators/"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/admin/account/two-factor", path
    refused = client.get("/admin/channels/", headers={"Accept": "application/json"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "two_factor_required"
    assert "requires two-factor sign-in for admins" in client.get("/admin/account/two-factor").get_data(as_text=True)
    enrol(client, "/admin/account")
    assert client.get("/admin/channels/").status_code == 200

    other = app.test_client()
    login(other, support.email, PASSWORD)
    assert other.get("/admin/channels/").status_code == 200  # required of admins only


def test_an_operator_sees_and_ends_their_own_sessions(sql_app):
    operator = users.create_operator(factories.ACTOR, "ops@example.com", PASSWORD, Role.OPERATOR)
    laptop, phone = sql_app.test_client(), sql_app.test_client()
    login(laptop, operator.email, PASSWORD)
    phone.post(
        "/login", data={"csrf_token": csrf_token(phone, "/login"), "email": operator.email, "password": PASSWORD},
        headers={"User-Agent": "Mozilla/5.0 (iPhone) Safari/605.1.15"})
    page = laptop.get("/admin/account/").get_data(as_text=True)
    assert "this browser" in page and "Safari on iPhone" in page
    phone_session = db.session.scalar(select(UserSession).where(UserSession.user_id == operator.id, UserSession.user_agent.like("%iPhone%")))
    assert post_form(laptop, f"/admin/account/sessions/{phone_session.id}/end", {}, token_from="/admin/account/").status_code == 302
    assert phone.get("/admin/channels/").status_code == 302  # signed out
    assert laptop.get("/admin/channels/").status_code == 200
    assert db.session.scalar(select(AuditEntry.action).where(AuditEntry.action == "session.revoke", AuditEntry.target_id == str(operator.id)))

    confirm = post_form(laptop, "/admin/account/sessions/end-all", {}, token_from="/admin/account/")
    assert confirm.status_code == 200 and "Log out everywhere" in confirm.get_data(as_text=True)
    assert laptop.get("/admin/channels/").status_code == 200  # nothing ends before it is confirmed
    post_form(laptop, "/admin/account/sessions/end-all", {"confirmed": "yes"}, token_from="/admin/account/")
    assert laptop.get("/admin/channels/").status_code == 302


def test_the_cli_turns_it_off_for_someone_locked_out(app):
    import json

    from controlplane.cli.group import cli

    ana = factories.user("ana@example.com", password=PASSWORD)
    setup = app.test_client()
    login(setup, ana.email, PASSWORD)
    enrol(setup)
    result = app.test_cli_runner().invoke(cli, ["user", "reset-2fa", "--email", ana.email, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["two_factor"] is False
    db.session.refresh(ana)
    assert not ana.two_factor_enabled and actions(ana)[-1] == "two_factor.reset"
    assert login(app.test_client(), ana.email, PASSWORD).headers["Location"] == "/"
