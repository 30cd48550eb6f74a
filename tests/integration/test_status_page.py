"""The status page: uptime, percentiles and error rates per model from the rollups ingestion folds,
the state right now, incidents written by operators (audited), the groups operators choose to
show, and nothing that names a channel or an upstream on the public side."""
from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import func, select

from controlplane.extensions import db
from controlplane.models import AuditEntry, ChannelRollup, ChannelStatus, Group, UsageRollup, utcnow
from controlplane.queries import status
from controlplane.services import channels as channel_service
from controlplane.services import incidents
from relay import redis_keys
from relay.usage import UsageEvent
from tests import factories
from tests.console import person, post, sign_in, text
from workers.usage import write_batch


def priced(*models: str) -> None:
    for model in models:
        row = factories.price(model)
        row.effective_from = row.effective_from - timedelta(days=40)
    db.session.commit()


def traffic(channel_id: int, model: str, count: int, ago: float = 60, status_: int = 200, latency: int = 180, ttft: int | None = 40):
    """`count` requests as ingestion writes them (`ago` seconds back)."""
    user = factories.user()
    at = time.time() - ago
    events = [UsageEvent(request_id=f"req_{time.monotonic_ns()}_{i}", started_at=at, finished_at=at + 1, endpoint="/v1/chat/completions",
                         status=status_, account_id=user.account_id, user_id=user.id, model=model, channel_id=channel_id,
                         latency_ms=latency, ttft_ms=ttft) for i in range(count)]
    write_batch(events)
    db.session.commit()


def by_model(rep) -> dict:
    return {e.name: e for e in rep.models}


def test_uptime_counts_only_5xx_and_the_error_rate_counts_every_error(sql_app):
    priced("gpt-4o")
    ch = factories.channel("https://a.example.com/v1", models=("gpt-4o",))
    traffic(ch.id, "gpt-4o", 90, latency=180)
    traffic(ch.id, "gpt-4o", 5, status_=400, latency=20)  # the caller's mistake: an error, not downtime
    traffic(ch.id, "gpt-4o", 5, status_=502, latency=900)
    traffic(ch.id, "gpt-4o", 100, ago=3 * 86400, status_=503)  # three days ago: in 7 and 30 days only
    assert db.session.scalar(select(func.sum(ChannelRollup.failures))) == db.session.scalar(select(func.sum(UsageRollup.failures))) == 105
    entry = by_model(status.report())["gpt-4o"]
    day, week = entry.windows["24h"], entry.windows["7d"]
    assert (day.requests, day.failures, day.errors) == (100, 5, 10)
    assert day.uptime == 0.95 and day.error_rate == 0.10
    assert (week.requests, week.uptime) == (200, 0.475) and entry.windows["30d"].requests == 200
    doc = status.public_document(status.report())["models"][0]["windows"]["24h"]
    assert (doc["latency_p50_ms"], doc["latency_p95_ms"], doc["ttft_p50_ms"]) == (200, 200, 50)
    traffic(ch.id, "gpt-4o", 10, latency=2_500)
    assert status.public_document(status.report())["models"][0]["windows"]["24h"]["latency_p95_ms"] == 3_000


def test_the_state_follows_routes_the_last_hour_and_open_incidents(sql_app):
    priced("gpt-4o", "claude-sonnet")  # "unpriced-model" is served but not on offer: not listed
    main = factories.channel("https://a.example.com/v1", models=("gpt-4o", "unpriced-model"))
    other = factories.channel("https://b.example.com/v1", models=("claude-sonnet",))
    assert {m: e.state for m, e in by_model(status.report()).items()} == {"gpt-4o": "operational", "claude-sonnet": "operational"}
    traffic(main.id, "gpt-4o", 18)
    traffic(main.id, "gpt-4o", 2, status_=502)  # 10% of the last hour failed
    channel_service.set_status(factories.ACTOR, other, ChannelStatus.AUTO_DISABLED, "probe failed")
    states = {m: e.state for m, e in by_model(status.report()).items()}
    assert states == {"gpt-4o": "degraded", "claude-sonnet": "outage"}
    traffic(main.id, "gpt-4o", 200)  # the share falls under 5%
    assert by_model(status.report())["gpt-4o"].state == "operational"
    incidents.open_incident(factories.ACTOR, "Slow answers", "The provider is slow.", "degraded", ["gpt-4o"])
    rep = status.report()
    assert by_model(rep)["gpt-4o"].state == "degraded" and rep.state == "outage" and len(rep.open_incidents) == 1


def test_rows_without_a_channel_count_against_the_model(sql_app):
    priced("gpt-4o")
    ch = factories.channel("https://a.example.com/v1", models=("gpt-4o",))
    traffic(ch.id, "gpt-4o", 3)
    traffic(0, "gpt-4o", 1, status_=503, ttft=None)  # no route could take it
    assert by_model(status.report())["gpt-4o"].windows["24h"].uptime == 0.75


def test_incidents_are_audited_validated_and_end(sql_app):
    row = incidents.open_incident(factories.ACTOR, "  Outage of gpt-4o ", "Upstream 5xx.", "outage", ["gpt-4o", "gpt-4o", " "])
    assert (row.title, row.models, row.ended_at) == ("Outage of gpt-4o", ["gpt-4o"], None)
    incidents.resolve(factories.ACTOR, row)
    assert row.ended_at is not None
    actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.target_type == "incident").order_by(AuditEntry.id)).all()
    assert actions == ["incident.create", "incident.resolve"]
    for bad, field in (({"title": ""}, "title"), ({"title": "x" * 201}, "title"), ({"body": "x" * 2001}, "body"),
                       ({"impact": "meh"}, "impact"), ({"models": ["m" * 201]}, "models"),
                       ({"started_at": utcnow() + timedelta(hours=1)}, "started_at")):
        args = {"title": "t", "body": "", "impact": "degraded", "models": []} | bad
        try:
            incidents.open_incident(factories.ACTOR, **args)
        except incidents.ServiceError as error:
            assert error.field == field
        else:
            raise AssertionError(f"{bad} was accepted")
    old = incidents.open_incident(factories.ACTOR, "Long ago", started_at=utcnow() - timedelta(days=40), ended_at=utcnow() - timedelta(days=35))
    assert old.id not in [i.id for i in status.report().incidents]  # only the last 30 days are shown


def test_the_public_page_and_json_name_no_channel_and_show_only_chosen_groups(app):
    priced("gpt-4o")
    secret = factories.channel("https://secret-upstream.example.net/v1", models=("gpt-4o",), name="Reseller-Acme-EU", groups=["vip"])
    traffic(secret.id, "gpt-4o", 4)
    vip = Group(name="vip", multiplier_bp=10_000, model_patterns=[])
    hidden = Group(name="acme-private", multiplier_bp=10_000, model_patterns=[])
    db.session.add_all([vip, hidden])
    db.session.commit()
    incidents.show_group(factories.ACTOR, vip, True)
    incidents.open_incident(factories.ACTOR, "Elevated errors", "We are looking into it.", "degraded", ["gpt-4o"])
    client = app.test_client()
    page = text(client.get("/status"))
    data = client.get("/status.json")
    assert data.headers["Cache-Control"] == "public, max-age=60"
    body = data.get_data(as_text=True)
    for leak in ("Reseller-Acme-EU", "secret-upstream", "acme-private", '"channel'):
        assert leak not in page and leak not in body
    doc = data.json
    assert [m["id"] for m in doc["models"]] == ["gpt-4o"] and doc["models"][0]["windows"]["24h"]["uptime"] == 1.0
    assert [g["name"] for g in doc["groups"]] == ["vip"] and doc["groups"][0]["models"][0]["windows"]["24h"]["requests"] == 4
    assert doc["incidents"][0]["title"] == "Elevated errors" and doc["state"] == "degraded"
    assert "Elevated errors" in page and "100.00%" in page and "Group vip" in page
    assert "200 / 200 ms" in page and "50 / 50 ms" in page  # latency and first token, p50 / p95


def test_the_document_is_built_once_a_minute_and_rebuilt_when_an_incident_changes(app):
    from controlplane.runtime import runtime

    priced("gpt-4o")
    ch = factories.channel("https://a.example.com/v1", models=("gpt-4o",))
    client = app.test_client()
    assert client.get("/status.json").json["models"][0]["windows"]["24h"]["requests"] == 0
    traffic(ch.id, "gpt-4o", 3)
    assert client.get("/status.json").json["models"][0]["windows"]["24h"]["requests"] == 0  # cached
    assert 0 < runtime().redis.ttl(redis_keys.STATUS_PAGE) <= 60
    row = incidents.open_incident(factories.ACTOR, "Maintenance")
    doc = client.get("/status.json").json
    assert doc["models"][0]["windows"]["24h"]["requests"] == 3 and doc["incidents"][0]["id"] == row.id


def test_operators_see_the_same_by_channel_and_manage_incidents(app):
    priced("gpt-4o")
    ch = factories.channel("https://a.example.com/v1", models=("gpt-4o",), name="Main OpenAI")
    traffic(ch.id, "gpt-4o", 9)
    traffic(ch.id, "gpt-4o", 1, status_=500)
    support = sign_in(app.test_client(), person("support"))
    page = text(support.get("/admin/status/"))
    assert "Main OpenAI" in page and "90.00%" in page
    assert post(support, "/admin/status/incidents", {"title": "x", "impact": "degraded"}).status_code == 403
    operator = sign_in(app.test_client(), person("operator"))
    bad = post(operator, "/admin/status/incidents", {"title": "", "impact": "degraded"})
    assert bad.status_code == 400 and "Give the incident a title" in text(bad)
    made = post(operator, "/admin/status/incidents", {"title": "Provider slow", "body": "Watching it.", "impact": "degraded",
                                                      "models": "gpt-4o"}, follow_redirects=True)
    assert "Provider slow" in text(made)
    incident_id = db.session.scalar(select(func.max(incidents.Incident.id)))
    assert "Provider slow" in text(app.test_client().get("/status"))
    ask = post(operator, f"/admin/status/incidents/{incident_id}/resolve")
    assert "Mark" in text(ask) and db.session.get(incidents.Incident, incident_id).ended_at is None  # a confirmation first
    post(operator, f"/admin/status/incidents/{incident_id}/resolve", confirm=True)
    db.session.expire_all()
    assert db.session.get(incidents.Incident, incident_id).ended_at is not None
    group = Group(name="pro", multiplier_bp=10_000, model_patterns=[])
    db.session.add(group)
    db.session.commit()
    post(operator, f"/admin/status/groups/{group.id}", {"shown": "yes"}, confirm=True)
    db.session.expire_all()
    assert db.session.get(Group, group.id).on_status_page is True
    assert "Group pro" in text(app.test_client().get("/status"))


def test_the_admin_api_opens_changes_and_resolves_incidents(app):
    from controlplane.services import api_tokens

    priced("gpt-4o")
    factories.channel("https://a.example.com/v1", models=("gpt-4o",), name="Main OpenAI")
    _, secret = api_tokens.create_token(factories.ACTOR, person("operator"), "alerting")
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    made = client.post("/admin/api/v1/incidents", json={"title": "Errors on gpt-4o", "impact": "outage", "models": ["gpt-4o"]}, headers=auth)
    assert made.status_code == 201 and made.json["ended_at"] is None
    incident_id = made.json["id"]
    bad = client.post("/admin/api/v1/incidents", json={"title": "x", "started_at": "yesterday"}, headers=auth)
    assert bad.status_code == 400 and bad.json["error"]["param"] == "started_at"
    assert client.patch(f"/admin/api/v1/incidents/{incident_id}", json={"impact": "degraded"}, headers=auth).json["title"] == "Errors on gpt-4o"
    doc = client.get("/admin/api/v1/status", headers=auth).json
    assert doc["channels"][0]["name"] == "Main OpenAI" and doc["models"][0]["state"] == "degraded"
    assert client.post(f"/admin/api/v1/incidents/{incident_id}/resolve", headers=auth).json["ended_at"] is not None
    assert client.post(f"/admin/api/v1/incidents/{incident_id}/resolve", headers=auth).status_code == 409
    assert client.get("/admin/api/v1/incidents", headers=auth).json["data"][0]["id"] == incident_id
    assert client.delete(f"/admin/api/v1/incidents/{incident_id}", headers=auth).status_code == 204
    assert client.get("/status.json").json["incidents"] == []
