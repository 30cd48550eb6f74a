"""Helpers for operator-console tests: people in each role, signed in without the (deliberately
slow) password hash, and form posts carrying a CSRF token."""
from __future__ import annotations

import re

import pytest

from controlplane.models import Role
from controlplane.services import users
from tests import factories

TOKEN = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')
ROLES = ("admin", "operator", "support")


def person(role: str, email: str | None = None):
    """A user in `role` with no password (tests sign in through the session, see `sign_in`)."""
    return users.create_user(factories.ACTOR, email or f"{role}@example.com", None, role=Role(role))


def sign_in(client, user):
    """What a successful sign-in leaves behind, minus the scrypt check (tested elsewhere): a recorded
    server-side session (services/sessions.py) and its token in the cookie session."""
    import hashlib
    import secrets

    from controlplane.extensions import db
    from controlplane.models import UserSession, utcnow
    from controlplane.services.sessions import SESSION_KEY

    token = secrets.token_urlsafe(24)
    db.session.add(UserSession(user_id=user.id, token_hash=hashlib.sha256(token.encode()).hexdigest(), created_at=utcnow(), last_seen_at=utcnow()))
    db.session.commit()
    with client.session_transaction() as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True
        session[SESSION_KEY] = token
    return client


def csrf(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return TOKEN.search(page).group(1)


def post(client, path: str, data: dict | None = None, confirm: bool = False, **kwargs):
    data = dict(data or {})
    data["csrf_token"] = csrf(client)
    if confirm:
        data["confirmed"] = "yes"
    return client.post(path, data=data, **kwargs)


def text(response) -> str:
    return response.get_data(as_text=True)


@pytest.fixture
def admin(app):
    return person("admin")


@pytest.fixture
def operator(app):
    return person("operator")


@pytest.fixture
def support(app):
    return person("support")


@pytest.fixture
def as_operator(app, operator):
    return sign_in(app.test_client(), operator)


@pytest.fixture
def as_admin(app, admin):
    return sign_in(app.test_client(), admin)


@pytest.fixture
def as_support(app, support):
    return sign_in(app.test_client(), support)
