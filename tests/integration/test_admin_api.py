"""The admin JSON API: operator tokens (and nothing else) authenticate, it mirrors the console for
scripts, refusals are JSON with the field at fault, and the OpenAPI document covers every route."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from controlplane import ledger, snapshot as control_snapshot
from controlplane.api import OPERATIONS
from controlplane.api.spec import openapi_path
from controlplane.extensions import db
from controlplane.models import AuditEntry, Channel, utcnow
from controlplane.services import api_tokens
from relay.channel_config import ChannelTimeouts, OpenAIConfig
from relay.snapshot import Snapshot
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


def test_channel_settings_are_checked_against_the_channel_type(api):
    channel = {"name": "Az", "type": "azure", "base_url": "https://r.openai.azure.com", "keys": ["k"], "models": ["m"]}
    typo = api.post("/admin/api/v1/channels", json={**channel, "config": {"api_verison": "2024-06-01"}})
    assert typo.status_code == 400 and typo.json["error"]["param"] == "config"
    assert "config.api_verison is not a setting of azure channels" in typo.json["error"]["message"]
    wrong = api.post("/admin/api/v1/channels", json={**channel, "config": {"api_version": 20240601}})
    assert wrong.status_code == 400 and "config.api_version: Expected str, got int" in wrong.json["error"]["message"]
    assert db.session.scalar(select(Channel.id)) is None
    created = api.post("/admin/api/v1/channels", json={**channel, "config": {"api_version": "2024-06-01"}})
    assert created.status_code == 201 and created.json["config"] == {"api_version": "2024-06-01"}
    # A new type re-checks the stored settings: an OpenAI channel has no api_version.
    retyped = api.patch(f"/admin/api/v1/channels/{created.json['id']}", json={"type": "openai"})
    assert retyped.status_code == 400 and retyped.json["error"]["param"] == "config"
    assert api.patch(f"/admin/api/v1/channels/{created.json['id']}", json={"type": "openai", "config": {}}).json["type"] == "openai"


def test_a_row_saved_before_settings_were_checked_still_loads(api):
    created = api.post("/admin/api/v1/channels", json={"name": "Old", "type": "openai", "base_url": "https://a.example.com/v1",
                                                       "keys": ["k"], "models": ["m"]}).json
    row = db.session.get(Channel, created["id"])
    row.config = {"legacy_flag": True, "api_version": "2024-06-01", "key_selection": 5, "timeouts": {"first_byte": 0.3}}
    db.session.commit()
    expected = OpenAIConfig(timeouts=ChannelTimeouts(first_byte=0.3))
    built = control_snapshot.build(1)
    assert built.channels[0].config == expected
    assert Snapshot.from_payload(built.to_payload(lambda s: s), lambda s: s).channels[0].config == expected
    # Stored as it was (the operator sees what is there); a change that leaves the settings alone
    # saves, one that sends them back is refused until the key it names is fixed.
    assert api.get(f"/admin/api/v1/channels/{row.id}").json["config"]["legacy_flag"] is True
    assert api.patch(f"/admin/api/v1/channels/{row.id}", json={"weight": 2}).status_code == 200
    resent = api.patch(f"/admin/api/v1/channels/{row.id}", json={"config": row.config})
    assert resent.status_code == 400 and "is not a setting of openai channels" in resent.json["error"]["message"]


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


def test_wrong_types_huge_ids_and_odd_digits_are_refusals_not_500s(api):
    """What schemathesis found (tests/integration/test_api_schemas.py), each once a 500."""
    wrong = api.post("/admin/api/v1/channels", json={"name": [None], "type": "openai", "base_url": "https://a.example.com/v1", "keys": ["k"]})
    assert wrong.status_code == 400 and wrong.json["error"]["param"] == "name"
    assert api.post("/admin/api/v1/refunds/topup", json={"topup_entry_id": 2**63, "reason": "x"}).json["error"]["param"] == "topup_entry_id"
    assert api.get(f"/admin/api/v1/channels/{2**63}").status_code == 404
    assert api.get(f"/admin/api/v1/users?page={2**63}").status_code == 200
    assert api.get(f"/admin/api/v1/logs?before={2**63}&user={2**64}&key={2**64}&channel={2**64}").status_code == 400  # no such channel
    assert api.get(f"/admin/api/v1/logs?before={2**63}&user={2**64}&key={2**64}&status=404").status_code == 200
    assert api.get("/admin/api/v1/logs?status=²").json["error"]["param"] == "status"
    assert api.post("/admin/api/v1/bans", json={"kind": "user", "subject": "²", "reason": "x"}).status_code == 400


def test_a_failed_model_fetch_is_a_documented_502(api):
    from controlplane.api.spec import document

    created = api.post("/admin/api/v1/channels", json={"name": "Gone", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "keys": ["sk-x"],
                                                       "models": ["gpt-4o"]}).json
    reply = api.post(f"/admin/api/v1/channels/{created['id']}/models/fetch")
    assert reply.status_code == 502 and reply.json["error"]["code"] == "upstream_error"
    assert "502" in document()["paths"]["/admin/api/v1/channels/{channel_id}/models/fetch"]["post"]["responses"]


def test_a_groups_capacity_queue_is_set_checked_and_reaches_the_relay(api, app):
    made = api.post("/admin/api/v1/groups", json={"name": "batch", "queue_seconds": 0, "priority": 5})
    assert made.status_code == 201 and (made.json["queue_seconds"], made.json["priority"]) == (0, 5)
    changed = api.patch(f"/admin/api/v1/groups/{made.json['id']}", json={"queue_seconds": 30})
    assert (changed.json["queue_seconds"], changed.json["priority"]) == (30, 5)  # what was left out stays
    for field, value in (("queue_seconds", 301), ("queue_seconds", -1), ("priority", 1001)):
        refused = api.patch(f"/admin/api/v1/groups/{made.json['id']}", json={field: value})
        assert refused.status_code == 400 and refused.json["error"]["param"] == field
    relay_view = Snapshot.from_payload(control_snapshot.build(1).to_payload(lambda s: s), lambda s: s).groups["batch"]
    assert (relay_view.queue_seconds, relay_view.priority) == (30, 5)
    assert factories.group_queue(10).queue_seconds == 10  # the default group's, through the same service


def test_the_cli_creates_a_group_with_its_capacity_queue(app):
    import json

    from controlplane.cli.group import cli

    result = app.test_cli_runner().invoke(cli, ["group", "create", "overnight", "--queue-seconds", "60", "--priority", "3", "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.output.strip().splitlines()[-1])
    assert (made["queue_seconds"], made["priority"]) == (60, 3)
