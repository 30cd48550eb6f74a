"""Sign-in cannot be turned against its users: `next` stays on this site, a guesser cannot lock the
owner out, and behind trusted proxies the throttles, sessions and audit see the real client."""
from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import AuditEntry, Role, UserSession
from controlplane.services import users
from tests import factories
from tests.helpers import csrf_token

PASSWORD = "correct horse battery"


def sign_in(client, email, password, ip="198.51.100.1", path="/login", headers=None):
    token = csrf_token(client, "/login")
    return client.post(path, data={"csrf_token": token, "email": email, "password": password},
                       environ_base={"REMOTE_ADDR": ip}, headers=headers or {})


@pytest.fixture
def owner(app):
    return factories.user("owner@example.com", password=PASSWORD)


OFF_SITE = ["/%09/evil.example/", "%2F%09%2Fevil.example%2F", "/%0A/evil.example/", "/%0D%0ALocation:%20https://evil.example/",
            "//evil.example/", "/%5Cevil.example/", "https://evil.example/", "javascript:alert(1)"]


def test_sign_in_never_redirects_off_site(app, owner):
    for target in OFF_SITE:
        response = sign_in(app.test_client(), owner.email, PASSWORD, path=f"/login?next={target}")
        assert (response.status_code, response.headers["Location"]) == (302, "/"), target


def test_sign_in_honours_a_path_on_this_site(client, owner):
    response = sign_in(client, owner.email, PASSWORD, path="/login?next=%2Fkeys%3Fpage%3D2")
    assert response.headers["Location"] == "/keys?page=2"


def test_switching_accounts_never_redirects_off_site(client, owner):
    sign_in(client, owner.email, PASSWORD)
    token = csrf_token(client, "/")
    for target in ("/\t/evil.example/", "//evil.example/", "/\\evil.example", "/\n/x"):
        response = client.post("/account/switch", data={"csrf_token": token, "account_id": "personal", "next": target})
        assert (response.status_code, response.headers["Location"]) == (302, "/"), target


def test_a_huge_user_agent_is_stored_cut_to_its_column(client, owner):
    """A header anyone can send is stored with the session: at most its 255-character column."""
    assert sign_in(client, owner.email, PASSWORD, headers={"User-Agent": "Mozilla/5.0 " + "x" * 100_000}).status_code == 302
    stored = db.session.scalar(select(UserSession.user_agent).where(UserSession.user_id == owner.id))
    assert stored.startswith("Mozilla/5.0") and len(stored) == 255


def test_a_guesser_cannot_lock_the_owner_out(client, app, owner, monkeypatch):
    settings = app.config["SWITCHBOARD"]
    monkeypatch.setitem(app.config, "SWITCHBOARD", replace(settings, login_attempts_per_minute=3))
    for _ in range(3):
        assert sign_in(client, owner.email, "guess", ip="203.0.113.66").status_code == 401
    assert sign_in(client, owner.email, "guess", ip="203.0.113.66").status_code == 429
    assert sign_in(app.test_client(), owner.email, PASSWORD, ip="198.51.100.1").status_code == 302


def test_one_address_spraying_many_emails_is_refused_uniformly(client, app, owner, monkeypatch):
    settings = app.config["SWITCHBOARD"]
    monkeypatch.setitem(app.config, "SWITCHBOARD", replace(settings, login_attempts_per_ip_per_minute=3))
    for n in range(3):
        assert sign_in(client, f"nobody{n}@example.com", "guess", ip="203.0.113.66").status_code == 401
    unknown = sign_in(client, "nobody9@example.com", "guess", ip="203.0.113.66")
    known = sign_in(client, owner.email, PASSWORD, ip="203.0.113.66")
    assert unknown.status_code == known.status_code == 429
    assert "Too many attempts" in unknown.get_data(as_text=True) and "Too many attempts" in known.get_data(as_text=True)
    # the rest of the world is unaffected
    assert sign_in(app.test_client(), owner.email, PASSWORD, ip="198.51.100.1").status_code == 302


def test_an_ipv6_sprayer_is_counted_per_64(client, app, monkeypatch):
    settings = app.config["SWITCHBOARD"]
    monkeypatch.setitem(app.config, "SWITCHBOARD", replace(settings, login_attempts_per_ip_per_minute=2))
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
        assert sign_in(client, "x@example.com", "guess", ip=host).status_code == 401
    assert sign_in(client, "y@example.com", "guess", ip="2001:db8:1:2::3").status_code == 429


def test_many_addresses_guessing_one_email_slow_it_down_but_never_refuse(app, redis_client):
    from controlplane.login_guard import LoginGuard, delay_for

    guard = LoginGuard(redis_client, per_email_ip=10, per_ip=30, delay_cap=4.0)
    for n in range(40):
        guard.failed("owner@example.com", f"203.0.113.{n}")
    verdict = guard.check("owner@example.com", "198.51.100.1")
    assert not verdict.refused and verdict.delay == 4.0
    assert guard.check("other@example.com", "198.51.100.1").delay == 0
    assert [delay_for(n, 4.0) for n in (0, 9, 10, 11, 12, 30)] == [0, 0, 0.25, 0.5, 1.0, 4.0]


@pytest.fixture
def behind_proxy(app, monkeypatch):
    from controlplane.proxies import TrustedProxies
    from relay.client_ip import parse_networks

    assert isinstance(app.wsgi_app, TrustedProxies)
    monkeypatch.setattr(app.wsgi_app, "trusted", parse_networks("10.0.0.0/8"))


def test_behind_a_trusted_proxy_sessions_and_audit_see_the_client(client, app, behind_proxy):
    operator = users.create_operator(factories.ACTOR, "op@example.com", PASSWORD, Role.ADMIN)
    response = sign_in(client, operator.email, PASSWORD, ip="10.0.0.2", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"})
    assert response.status_code == 302
    assert db.session.scalar(select(UserSession.ip)) == "203.0.113.7"
    token = csrf_token(client, "/admin/users/")
    created = client.post("/admin/users/new", data={"csrf_token": token, "email": "new@example.com", "group": "default"},
                          environ_base={"REMOTE_ADDR": "10.0.0.2"}, headers={"Forwarded": 'for="203.0.113.8"'})
    assert created.status_code == 302
    ips = set(db.session.scalars(select(AuditEntry.ip).where(AuditEntry.actor == operator.email)))
    assert ips == {"203.0.113.8"}


def test_spoofed_forwarding_headers_from_an_untrusted_peer_are_ignored(client, app, behind_proxy):
    factories.user("spoof@example.com", password=PASSWORD)
    response = sign_in(client, "spoof@example.com", PASSWORD, ip="198.51.100.9", headers={"X-Forwarded-For": "203.0.113.7"})
    assert response.status_code == 302
    assert db.session.scalar(select(UserSession.ip)) == "198.51.100.9"


def test_throttles_count_the_client_behind_the_proxy_not_the_proxy(client, app, owner, behind_proxy, monkeypatch):
    settings = app.config["SWITCHBOARD"]
    monkeypatch.setitem(app.config, "SWITCHBOARD", replace(settings, login_attempts_per_ip_per_minute=2))
    for _ in range(2):
        sign_in(client, "x@example.com", "guess", ip="10.0.0.2", headers={"X-Forwarded-For": "203.0.113.66"})
    assert sign_in(client, "y@example.com", "guess", ip="10.0.0.2", headers={"X-Forwarded-For": "203.0.113.66"}).status_code == 429
    # another client through the same proxy is a different address
    assert sign_in(client, owner.email, PASSWORD, ip="10.0.0.2", headers={"X-Forwarded-For": "203.0.113.67"}).status_code == 302
