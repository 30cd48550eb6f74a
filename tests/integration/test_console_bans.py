"""Bans of users, keys and IP ranges: confirmed in the console, published to the relays at once
(key records and the routing snapshot; the relay refuses the subject), listed as active or ended, lifted with who and when."""
from __future__ import annotations

import ipaddress
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Ban, utcnow
from controlplane.runtime import runtime
from controlplane.services import ServiceError, bans
from relay import config_store
from relay.key_cache import KeyCache
from tests import factories
from tests.console import as_operator, operator, post, text  # noqa: F401


def relay_refuses(user_id, key_id, ip: str | None = None) -> bool:
    """What a relay would decide: addresses from the published snapshot, users and keys from the
    key's record."""
    now = time.time()
    if ip is not None:
        snap = config_store.load(runtime().redis, runtime().cipher.decrypt)
        return snap.bans.for_ip(ipaddress.ip_address(ip), now) is not None
    view = KeyCache(runtime().redis).by_id(key_id)
    return view is not None and view.banned_at(now) is not None


def test_banning_a_user_from_their_page_reaches_the_relay(as_operator):
    user = factories.funded_user(email="ban@example.com")
    key, _ = factories.api_key(user)
    until = (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    asked = post(as_operator, f"/admin/users/{user.id}/ban", {"reason": "chargeback", "expires_at": until})
    assert "Ban ban@example.com until" in text(asked) and not relay_refuses(user.id, key.id)
    post(as_operator, f"/admin/users/{user.id}/ban", {"reason": "chargeback", "expires_at": until}, confirm=True)
    assert relay_refuses(user.id, key.id)
    page = text(as_operator.get("/admin/bans/"))
    assert "ban@example.com" in page and "chargeback" in page and "operator@example.com" in page
    post(as_operator, f"/admin/users/{user.id}/unban")
    assert not relay_refuses(user.id, key.id)
    ended = text(as_operator.get("/admin/bans/?show=ended"))
    assert "lifted" in ended and "ban@example.com" in ended


def test_ban_a_key_by_prefix_and_an_ip_range(as_operator):
    user = factories.funded_user()
    key, secret = factories.api_key(user)
    post(as_operator, "/admin/bans/", {"kind": "key", "subject": key.prefix, "reason": "leaked on GitHub"}, confirm=True)
    post(as_operator, "/admin/bans/", {"kind": "ip", "subject": "198.51.100.7/24", "reason": "credential stuffing"}, confirm=True)
    assert relay_refuses(None, key.id)
    assert relay_refuses(None, -1, "198.51.100.200") and not relay_refuses(None, -1, "198.51.101.1")
    assert db.session.scalar(select(Ban.subject).where(Ban.kind == "ip")) == "198.51.100.0/24"


@pytest.mark.parametrize("kind,subject,message", [("ip", "not-an-ip", "not an IP address"), ("user", "ghost@example.com", "No user"),
                                                  ("key", "sk-sb-nope", "No API key")])
def test_an_unknown_subject_is_explained_and_nothing_is_banned(as_operator, kind, subject, message):
    response = post(as_operator, "/admin/bans/", {"kind": kind, "subject": subject, "reason": "x"}, confirm=True)
    assert response.status_code == 400 and message in text(response)
    assert db.session.scalar(select(Ban.id)) is None


def test_a_past_expiry_or_a_missing_reason_is_refused(app):
    with pytest.raises(ServiceError, match="future"):
        bans.ban(factories.ACTOR, "ip", "10.0.0.1", "x", utcnow() - timedelta(minutes=1))
    with pytest.raises(ServiceError, match="reason"):
        bans.ban(factories.ACTOR, "ip", "10.0.0.1", " ")


def test_an_expired_ban_is_listed_as_ended_and_no_longer_refuses(as_operator):
    row = bans.ban(factories.ACTOR, "ip", "192.0.2.1", "short", utcnow() + timedelta(seconds=30))
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert "192.0.2.1/32" not in text(as_operator.get("/admin/bans/"))
    assert "192.0.2.1/32" in text(as_operator.get("/admin/bans/?show=ended"))
    assert "no longer active" in text(as_operator.get(post(as_operator, f"/admin/bans/{row.id}/lift", confirm=True).headers["Location"]))
