"""Dead letters in the operator console and the admin API: each shows its error and what the event
says; a retry re-queues it; a discard confirms its effect, gives the charge back and is audited."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from controlplane import dead_letters
from controlplane.extensions import db
from controlplane.models import AuditEntry
from controlplane.services import api_tokens, billing
from relay.usage import USAGE_STREAMS, UsageEvent
from tests import factories
from tests.console import person, post, sign_in, text
from workers import usage as usage_worker


def _dead_letter(redis, account_id: int, rid: str = "req_dead", cost: int = 250_000) -> str:
    """A finished request the relay charged live, whose token count no SQL integer holds."""
    event = UsageEvent(request_id=rid, started_at=1.7e9, finished_at=1.7e9 + 1, endpoint="/v1/chat/completions", status=200,
                       account_id=account_id, model="gpt-4o", output_tokens=5_000_000_000, cost=cost)
    redis.xadd(USAGE_STREAMS[0], {"e": event.encode()})
    usage_worker.ingest()
    return dead_letters.newest(redis)[0][0].id


@pytest.fixture
def as_operator(app):
    return sign_in(app.test_client(), person("operator"))


@pytest.fixture
def as_support(app):
    return sign_in(app.test_client(), person("support"))


@pytest.fixture
def customer(app):
    return factories.funded_user("5", email="ana@example.com")


def test_the_list_shows_the_error_and_the_event_and_the_dashboard_warns(as_operator, customer, redis_client):
    entry = _dead_letter(redis_client, customer.account_id)
    page = text(as_operator.get("/admin/dead-letters/"))
    assert "req_dead" in page and "ana@example.com" in page and "gpt-4o" in page and "$0.250000" in page
    assert "output_tokens 5000000000 is outside" in page and ">Retry<" in page and ">Discard<" in page
    detail = text(as_operator.get(f"/admin/dead-letters/{entry}"))
    assert "&#34;output_tokens&#34;:5000000000" in detail  # the raw event, escaped
    assert "1 usage event could not be written" in text(as_operator.get("/admin/dashboard/"))
    assert "No dead letters" not in page


def test_support_reads_but_cannot_retry_or_discard(as_support, customer, redis_client):
    entry = _dead_letter(redis_client, customer.account_id)
    page = text(as_support.get("/admin/dead-letters/"))
    assert "req_dead" in page and ">Retry<" not in page
    assert post(as_support, f"/admin/dead-letters/{entry}/retry").status_code == 403
    assert dead_letters.count(redis_client) == 1


def test_retry_puts_the_event_back_on_the_usage_stream(as_operator, customer, redis_client):
    entry = _dead_letter(redis_client, customer.account_id)
    response = post(as_operator, f"/admin/dead-letters/{entry}/retry")
    assert response.status_code == 302
    assert "back on the usage stream" in text(as_operator.get(response.headers["Location"]))
    assert dead_letters.count(redis_client) == 0 and redis_client.xlen(USAGE_STREAMS[0]) == 1
    assert post(as_operator, f"/admin/dead-letters/{entry}/retry").status_code == 404


def test_discard_confirms_then_gives_the_charge_back_and_is_audited(as_operator, customer, redis_client):
    entry = _dead_letter(redis_client, customer.account_id)
    before = billing.live_balance(customer.account_id)[0]
    confirm = text(post(as_operator, f"/admin/dead-letters/{entry}/discard"))
    assert "Discard usage event req_dead for good?" in confirm and "$0.25" in confirm and "ana@example.com" in confirm
    assert dead_letters.count(redis_client) == 1  # nothing happens before the confirmation
    assert post(as_operator, f"/admin/dead-letters/{entry}/discard", confirm=True).status_code == 302
    assert dead_letters.count(redis_client) == 0
    assert billing.live_balance(customer.account_id)[0] == before + 250_000
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "usage.dead_letter.discard"))
    assert audit.actor == "operator@example.com" and audit.target_id == "req_dead"
    assert audit.after == {"live_balance_credit_micro_usd": 250_000} and audit.before["cost_micro_usd"] == 250_000
    assert "No dead letters" in text(as_operator.get("/admin/dead-letters/"))


def test_the_admin_api_lists_retries_and_discards(app, customer, redis_client):
    first = _dead_letter(redis_client, customer.account_id, "req_api1")
    second = _dead_letter(redis_client, customer.account_id, "req_api2")
    _, secret = api_tokens.create_token(factories.ACTOR, person("operator", "script@example.com"), "ci")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    listing = client.get("/admin/api/v1/dead-letters?per_page=1").json
    assert [d["request_id"] for d in listing["data"]] == ["req_api2"] and listing["total"] == 2 and listing["next_before"] == second
    older = client.get(f"/admin/api/v1/dead-letters?before={listing['next_before']}").json
    assert [d["request_id"] for d in older["data"]] == ["req_api1"] and older["next_before"] is None
    one = client.get(f"/admin/api/v1/dead-letters/{first}").json
    assert one["error"].startswith("InvalidEvent: output_tokens") and one["cost_micro_usd"] == 250_000
    assert client.post(f"/admin/api/v1/dead-letters/{first}/retry").status_code == 200
    assert client.delete(f"/admin/api/v1/dead-letters/{second}").status_code == 204
    assert client.delete(f"/admin/api/v1/dead-letters/{second}").json["error"]["code"] == "not_found"
    assert client.get("/admin/api/v1/dead-letters/not-an-id").status_code == 404
    assert dead_letters.count(redis_client) == 0 and redis_client.xlen(USAGE_STREAMS[0]) == 1
