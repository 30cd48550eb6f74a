"""Groups, operators, API tokens and the audit log in the console."""
from __future__ import annotations

import re

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ApiToken, AuditEntry, Group, User
from controlplane.services import groups
from tests import factories
from tests.console import admin, as_admin, as_operator, operator, post, text  # noqa: F401


def test_create_and_edit_a_group_with_limits_and_model_access(as_operator):
    response = post(as_operator, "/admin/groups/new", {"name": "pro", "multiplier": "0.85", "model_patterns": "gpt-4o*\nclaude-*",
                                                      "rpm": "600", "tpm": "", "concurrency": "20", "is_default": "y"})
    assert response.status_code == 302
    group = db.session.scalar(select(Group).where(Group.name == "pro"))
    assert (group.multiplier_bp, group.model_patterns, group.rpm, group.tpm, group.concurrency, group.is_default) == (
        8500, ["gpt-4o*", "claude-*"], 600, None, 20, True)
    post(as_operator, f"/admin/groups/{group.id}", {"multiplier": "1.25", "model_patterns": "", "rpm": "", "tpm": "1000", "concurrency": ""})
    db.session.refresh(group)
    assert (group.multiplier_bp, group.model_patterns, group.rpm, group.tpm) == (12500, [], None, 1000)
    assert "1.25×" in text(as_operator.get("/admin/groups/"))


def test_invalid_group_values_are_explained(as_operator):
    for field, value, message in (("multiplier", "-1", "cannot be negative"), ("multiplier", "1.00001", "four decimals"),
                                  ("rpm", "0", "at least 1"), ("name", "has space", "letters, digits")):
        data = {"name": "g", "multiplier": "1", field: value}
        response = post(as_operator, "/admin/groups/new", data)
        assert response.status_code == 400 and message in text(response), field
    assert db.session.scalar(select(Group.id).where(Group.name != "default")) is None


def test_a_group_with_users_or_the_default_group_is_not_deleted(as_operator):
    factories.user("member@example.com")
    default = groups.default_group()
    empty = groups.create_group(factories.ACTOR, "empty", "1")
    response = post(as_operator, f"/admin/groups/{default.id}/delete", confirm=True)
    assert "2 user(s) are in default" in text(as_operator.get(response.headers["Location"]))
    post(as_operator, f"/admin/groups/{empty.id}/delete", confirm=True)
    assert {g.name for g in db.session.scalars(select(Group))} == {"default"}


def test_an_admin_adds_an_operator_who_can_then_sign_in(as_admin, client):
    response = post(as_admin, "/admin/operators/", {"email": "new-op@example.com", "password": "long enough pass", "role": "support"})
    assert response.status_code == 302
    assert db.session.scalar(select(User.role).where(User.email == "new-op@example.com")) == "support"
    short = post(as_admin, "/admin/operators/", {"email": "x@example.com", "password": "short", "role": "support"})
    assert short.status_code == 400 and "at least 8" in text(short)


def test_a_token_is_shown_once_and_revoked_after_confirming(as_operator):
    created = text(post(as_operator, "/admin/tokens/", {"name": "billing export"}))
    secret = re.search(r'value="(sbop-[^"]+)"', created).group(1)
    assert "only time it is shown" in created and "Copy" in created
    listing = text(as_operator.get("/admin/tokens/"))
    assert secret not in listing and secret[:11] in listing
    assert as_operator.get("/admin/api/v1/channels", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    token = db.session.scalar(select(ApiToken))
    assert "Revoke the token billing export" in text(post(as_operator, f"/admin/tokens/{token.id}/revoke"))
    post(as_operator, f"/admin/tokens/{token.id}/revoke", confirm=True)
    assert as_operator.get("/admin/api/v1/channels", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_the_audit_log_shows_who_did_what_with_before_and_after(as_operator):
    channel = factories.channel("https://a.example.com/v1", name="Before")
    post(as_operator, f"/admin/channels/{channel.id}/edit", {"name": "After", "type": "openai", "base_url": channel.base_url, "models": "m",
                                                            "priority": "0", "weight": "1"})
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "channel.update"))
    assert entry.actor == "operator@example.com" and entry.ip == "127.0.0.1"
    page = text(as_operator.get("/admin/audit/?action=channel."))
    assert "channel.update" in page and '"Before"' in page and '"After"' in page
    assert "user.create" not in page
    assert "No action matches" in text(as_operator.get("/admin/audit/?actor=nobody"))


def test_a_groups_capacity_queue_is_set_in_the_form(as_operator):
    response = post(as_operator, "/admin/groups/new", {"name": "batch", "multiplier": "1", "queue_seconds": "0", "priority": "7"})
    assert response.status_code == 302
    group = db.session.scalar(select(Group).where(Group.name == "batch"))
    assert (group.queue_seconds, group.priority) == (0, 7)
    page = text(as_operator.get(f"/admin/groups/{group.id}"))
    assert "Capacity queue (seconds)" in page and "Queue priority" in page
    for field, value in (("queue_seconds", "301"), ("priority", "1001"), ("queue_seconds", "-1")):
        refused = post(as_operator, f"/admin/groups/{group.id}", {"multiplier": "1", field: value})
        assert refused.status_code == 400 and "Enter 0 to" in text(refused), field
    db.session.refresh(group)
    assert (group.queue_seconds, group.priority) == (0, 7)
