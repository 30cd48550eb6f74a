"""The admin JSON API: operator tokens (and nothing else) authenticate, it mirrors the console for
scripts, refusals are JSON with the field at fault, and the OpenAPI document covers every route."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from controlplane import ledger
from controlplane.api import OPERATIONS
from controlplane.api.spec import openapi_path
from controlplane.extensions import db
from controlplane.models import AuditEntry, Channel, utcnow
from controlplane.services import api_tokens
from relay.usage import UsageEvent
from tests import factories
from tests.console import person
from workers.usage import write_batch


@pytest.fixture
def api(app):
    """A client with an operator's token in every request."""
    _, secret = api_tokens.create_token(factories.ACTOR, person("operator", "script@example.com"), "ci")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client


def test_only_a_live_token_of_an_active_operator_gets_in(app):
    owner = person("admin", "owner@example.com")
    token, secret = api_tokens.create_token(factories.ACTOR, owner, "ci", expires_at=utcnow() + timedelta(days=1))
    client = app.test_client()

    def status():
        return client.get("/admin/api/v1/channels", headers={"Authorization": f"Bearer {secret}"}).status_code

    assert status() == 200
    assert client.get("/admin/api/v1/channels").json["error"]["code"] == "unauthenticated"
    owner.role = "user"  # no longer an operator
    db.session.commit()
    assert status() == 401
    owner.role, owner.status = "admin", "disabled"
    db.session.commit()
    assert status() == 401
    owner.status = "active"
    token.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert status() == 401
    token.expires_at = None
    db.session.commit()
    assert status() == 200
    api_tokens.revoke(factories.ACTOR, token)
    assert status() == 401


def test_a_script_runs_the_gateway_through_the_api(api):
    created = api.post("/admin/api/v1/channels", json={"name": "Scripted", "type": "openai", "base_url": "https://a.example.com/v1",
                                                       "keys": ["sk-script-9999"], "models": ["gpt-4o"], "cost_bp": 7000})
    assert created.status_code == 201 and created.json["keys"][0]["key"] == "••••9999" and "sk-script" not in created.get_data(as_text=True)
    channel_id = created.json["id"]
    assert api.patch(f"/admin/api/v1/channels/{channel_id}", json={"weight": 4, "tag": "ci"}).json["weight"] == 4
    assert api.post("/admin/api/v1/prices", json={"model": "gpt-4o", "input": "2.5", "output": "10"}).status_code == 201
    user = api.post("/admin/api/v1/users", json={"email": "buyer@example.com"}).json
    topup = api.post(f"/admin/api/v1/users/{user['id']}/topup", json={"amount_usd": "5", "reason": "invoice 12"})
    assert topup.status_code == 201 and topup.json["amount_micro_usd"] == 5_000_000
    now = time.time()
    write_batch([UsageEvent(request_id="req_api", started_at=now, finished_at=now, endpoint="/v1/chat/completions", status=200,
                            account_id=user["account_id"], user_id=user["id"], model="gpt-4o", channel_id=channel_id, cost=40_000)])
    db.session.commit()
    assert api.get("/admin/api/v1/logs?user=buyer@example.com").json["data"][0]["request_id"] == "req_api"
    assert "req_api" in api.get("/admin/api/v1/logs/export.csv", buffered=True).get_data(as_text=True)
    refund = api.post("/admin/api/v1/refunds/request", json={"request_id": "req_api", "reason": "bad answer"})
    assert refund.status_code == 201 and ledger.stored_balance(user["account_id"]) == 5_000_000
    assert api.post("/admin/api/v1/refunds/request", json={"request_id": "req_api", "reason": "again"}).status_code == 409
    assert api.post(f"/admin/api/v1/users/{user['id']}/ban", json={"reason": "abuse"}).status_code == 201
    assert api.get(f"/admin/api/v1/users/{user['id']}").json["banned"] is True
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "ban.create"))
    assert entry.actor.startswith("script@example.com (API token sbop-")


def test_refusals_are_json_and_name_the_field(api):
    bad = api.post("/admin/api/v1/channels", json={"name": "x", "type": "openai", "base_url": "ftp://nope", "keys": ["k"], "models": ["m"]})
    assert bad.status_code == 400 and bad.json["error"]["param"] == "base_url"
    assert api.post("/admin/api/v1/channels", data="not json", content_type="text/plain").status_code == 400
    assert api.get("/admin/api/v1/channels/424242").json["error"]["code"] == "not_found"
    negative = api.post("/admin/api/v1/prices", json={"model": "m", "input": "-1", "output": "1"})
    assert negative.status_code == 400 and negative.json["error"]["param"] == "input"
    assert db.session.scalar(select(Channel.id)) is None
    assert api.patch("/admin/api/v1/users/1", json={"role": "admin"}).status_code == 403  # operators do not change roles


def test_the_openapi_document_describes_every_route(app):
    doc = app.test_client().get("/admin/api/openapi.json").json
    assert doc["openapi"].startswith("3.") and doc["components"]["securitySchemes"]["operatorToken"]["scheme"] == "bearer"
    rules = {(openapi_path(r.rule.removeprefix("/admin/api")), m.lower()) for r in app.url_map.iter_rules()
             if r.rule.startswith("/admin/api/v1") for m in r.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert rules == documented and len(documented) == len(OPERATIONS)
    for path, item in doc["paths"].items():
        for operation in item.values():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert operation["x-roles"] and operation["summary"]
