"""Every console route and every admin API route, for every role: anonymous browsers are sent to
sign in and JSON callers get 401; customers get 403; each operator role gets exactly what it may.

The tables below name every route; a test fails when a route exists that they do not name, so a
new route cannot skip its role check. Requests carry empty forms (or ids that do not exist for
deletions): allowed roles get a validation error or a confirmation page, and nothing changes.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from flask import url_for

from controlplane.api import OPERATIONS
from controlplane.models import utcnow
from controlplane.services import api_tokens, bans, billing, incidents, prices, redemption
from tests import factories
from tests.conftest import clean_tables
from tests.console import csrf, person, sign_in

R = {"admin", "operator", "support"}  # read
W = {"admin", "operator"}  # write
A = {"admin"}  # operator management

# (endpoint, method): roles allowed. Ids come from the world below.
CONSOLE = {
    ("admin.home", "GET"): R, ("admin.dashboard.index", "GET"): R, ("admin.dashboard.data", "GET"): R,
    ("admin.channels.index", "GET"): R, ("admin.channels.create", "GET"): W, ("admin.channels.create", "POST"): W,
    ("admin.channels.detail", "GET"): R, ("admin.channels.edit", "GET"): W, ("admin.channels.edit", "POST"): W,
    ("admin.channels.set_status", "POST"): W, ("admin.channels.delete", "POST"): W, ("admin.channels.bulk_status", "POST"): W,
    ("admin.channels.add_keys", "POST"): W, ("admin.channels.key_status", "POST"): W, ("admin.channels.delete_key", "POST"): W,
    ("admin.channels.fetch_models", "POST"): W, ("admin.channels.set_models", "POST"): W, ("admin.channel_probe.test_now", "POST"): W,
    ("admin.channel_probe.test_all", "POST"): W,
    ("admin.prices.index", "GET"): R, ("admin.prices.set_price", "POST"): W, ("admin.prices.cancel", "POST"): W,
    ("admin.prices.export", "GET"): R, ("admin.prices.import_prices", "POST"): W,
    ("admin.prices.set_route", "POST"): W, ("admin.prices.delete_route", "POST"): W,
    ("admin.groups.index", "GET"): R, ("admin.groups.create", "GET"): W, ("admin.groups.create", "POST"): W,
    ("admin.groups.edit", "GET"): R, ("admin.groups.update", "POST"): W, ("admin.groups.delete", "POST"): W,
    ("admin.users.index", "GET"): R, ("admin.users.create", "GET"): W, ("admin.users.create", "POST"): W, ("admin.users.detail", "GET"): R,
    ("admin.users.topup", "POST"): W, ("admin.users.adjust", "POST"): W, ("admin.users.ban", "POST"): W, ("admin.users.unban", "POST"): W,
    ("admin.users.change_group", "POST"): W, ("admin.users.change_role", "POST"): A, ("admin.users.set_active", "POST"): W,
    ("admin.users.key_status", "POST"): W, ("admin.users.create_key", "POST"): W, ("admin.users.close", "POST"): W,
    ("admin.organisations.index", "GET"): R, ("admin.organisations.detail", "GET"): R, ("admin.organisations.topup", "POST"): W,
    ("admin.organisations.adjust", "POST"): W, ("admin.organisations.goodwill", "POST"): W, ("admin.organisations.ban", "POST"): W,
    ("admin.organisations.unban", "POST"): W, ("admin.organisations.member_role", "POST"): W,
    ("admin.organisations.close", "POST"): W,
    ("admin.bans.index", "GET"): R, ("admin.bans.create", "POST"): W, ("admin.bans.lift", "POST"): W,
    ("admin.refunds.index", "GET"): R, ("admin.refunds.refund_request", "POST"): R, ("admin.refunds.refund_topup", "POST"): W,
    ("admin.refunds.goodwill", "POST"): W,
    ("admin.disruption.index", "GET"): R, ("admin.disruption.post", "POST"): W, ("admin.disruption.detail", "GET"): R,
    ("admin.payments.index", "GET"): R, ("admin.payments.invoice", "GET"): R, ("admin.payments.refund_requests", "GET"): R,
    ("admin.payments.approve", "POST"): W, ("admin.payments.decline", "POST"): W, ("admin.payments.reconcile", "GET"): R,
    ("admin.payments.credit_missing", "POST"): W, ("admin.payments.settings", "GET"): A, ("admin.payments.settings", "POST"): A,
    ("admin.logs.index", "GET"): R, ("admin.logs.export", "GET"): R, ("admin.logs.detail", "GET"): R,
    ("admin.dead_letters.index", "GET"): R, ("admin.dead_letters.detail", "GET"): R, ("admin.dead_letters.retry", "POST"): W,
    ("admin.dead_letters.discard", "POST"): W,
    ("admin.audit.index", "GET"): R, ("admin.terms.index", "GET"): R, ("admin.terms.publish", "POST"): W,
    ("admin.status.index", "GET"): R, ("admin.status.create", "POST"): W, ("admin.status.edit", "GET"): R, ("admin.status.update", "POST"): W,
    ("admin.status.resolve", "POST"): W, ("admin.status.delete", "POST"): W, ("admin.status.show_group", "POST"): W,
    ("admin.operators.index", "GET"): A, ("admin.operators.create", "POST"): A,
    ("admin.tokens.index", "GET"): R, ("admin.tokens.create", "POST"): R,
    ("admin.tokens.revoke", "POST"): A,  # the sample token is the admin's: others may revoke only their own
    ("admin.redemption.index", "GET"): R, ("admin.redemption.index", "POST"): W, ("admin.redemption.detail", "GET"): R,
    ("admin.redemption.export", "GET"): W, ("admin.redemption.withdraw", "POST"): W,
    # each operator's own account: two-factor sign-in and their sessions
    ("admin.account.index", "GET"): R, ("admin.account.end_session", "POST"): R, ("admin.account.end_all", "POST"): R,
    ("admin.account.two_factor", "GET"): R, ("admin.account.two_factor_start", "POST"): R, ("admin.account.two_factor_confirm", "POST"): R,
    ("admin.account.two_factor_disable", "POST"): R,
}
MISSING = 999_999  # deletions in the API matrix target nothing, so allowed roles get 404 and nothing goes


@pytest.fixture(scope="module")
def world(sqlite_app, redis_slot):
    """One set of rows for the whole module (the matrix only reads, or is refused)."""
    clean_tables(sqlite_app)
    redis_slot.client.flushdb()
    with sqlite_app.app_context():
        people = {role: person(role) for role in ("admin", "operator", "support", "user")}
        channel = factories.channel("http://127.0.0.1:9/v1", tag="prod")
        factories.price("gpt-4o-mini")
        scheduled = prices.set_price(factories.ACTOR, "gpt-4o-mini", input="0.1", output="0.5", effective_from=utcnow() + timedelta(days=8))
        customer = factories.funded_user(email="customer@example.com")
        key, _ = factories.api_key(customer)
        ban = bans.ban(factories.ACTOR, "ip", "203.0.113.0/24", "abuse")
        token, _ = api_tokens.create_token(factories.ACTOR, people["admin"], "admin script")
        secrets = {role: api_tokens.create_token(factories.ACTOR, people[role], f"{role} script")[1] for role in R}
        topup = billing.topup(factories.ACTOR, customer.account, "1", "more")
        batch, _ = redemption.generate_batch(factories.ACTOR, "launch", "1", 1, None)
        from controlplane.services import organisations

        incident = incidents.open_incident(factories.ACTOR, "Slow answers")
        org = organisations.create_organisation(factories.ACTOR, customer, "Customer Co")
        ids = dict(batch_id=batch.id, channel_id=channel.id, key_id=channel.keys[0].id, group_id=customer.group_id, user_id=customer.id, api_key_id=key.id,
                   ban_id=ban.id, price_id=scheduled.id, token_id=token.id, topup_id=topup.id, request_id="req_none", account_id=org.id,
                   credit_id=MISSING, member_id=MISSING, entry_id="1-0", session_id=MISSING, incident_id=incident.id, invoice_id=MISSING, route_id=MISSING,
                   refund_request_id=MISSING, payment_id=MISSING)
        yield {"people": people, "ids": ids, "secrets": secrets}
    clean_tables(sqlite_app)


def console_url(app, endpoint: str, ids: dict) -> str:
    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
    with app.test_request_context():
        return url_for(endpoint, **{name: ids[name] for name in rule.arguments})


def test_the_table_names_every_console_route(sqlite_app):
    routes = {(r.endpoint, m) for r in sqlite_app.url_map.iter_rules() if r.endpoint.startswith("admin.")
              for m in r.methods - {"HEAD", "OPTIONS"}}
    assert routes == set(CONSOLE)


def _request(client, method: str, url: str, json: bool = False):
    headers = {"Accept": "application/json"} if json else {}
    if method == "GET":
        response = client.get(url, headers=headers)
    else:
        response = client.post(url, data={"csrf_token": csrf(client)}, headers=headers)
    response.close()  # a streamed body (the CSV export) releases its context here
    return response


def _signed_in_as_nobody(response) -> bool:
    return response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("endpoint,method", sorted(CONSOLE))
def test_console_route_for_every_role(sqlite_app, world, endpoint, method):
    url = console_url(sqlite_app, endpoint, world["ids"])
    anonymous = sqlite_app.test_client()
    assert _signed_in_as_nobody(_request(anonymous, method, url))
    assert _request(anonymous, method, url, json=True).status_code == 401
    for role in ("user", "support", "operator", "admin"):
        client = sign_in(sqlite_app.test_client(), world["people"][role])
        response = _request(client, method, url)
        if role in CONSOLE[(endpoint, method)]:
            assert response.status_code not in (401, 403) and not _signed_in_as_nobody(response), (role, response.status_code)
        else:
            assert response.status_code == 403, (role, response.status_code)
            json = _request(client, method, url, json=True)
            assert json.status_code == 403 and json.is_json and json.json["error"]["code"] == "forbidden"


def api_url(rule: str, ids: dict, method: str) -> str:
    path = "/admin/api" + rule
    for name, value in ids.items():
        value = MISSING if method == "DELETE" or name in ("ban_id", "incident_id") else value
        path = path.replace(f"<int:{name}>", str(value)).replace(f"<{name}>", str(value))
    return path


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method} {op.rule}")
def test_api_route_for_every_role(sqlite_app, world, operation):
    url = api_url(operation.rule, world["ids"], operation.method)
    client = sqlite_app.test_client()
    assert client.open(url, method=operation.method, json={}).status_code == 401
    assert client.open(url, method=operation.method, json={}, headers={"Authorization": "Bearer sbop-not-a-token"}).status_code == 401
    allowed = {str(r) for r in operation.roles}
    for role, secret in world["secrets"].items():
        response = client.open(url, method=operation.method, json={}, headers={"Authorization": f"Bearer {secret}"})
        response.close()
        if role in allowed:
            assert response.status_code not in (401, 403), (role, response.status_code, response.get_data(as_text=True)[:200])
        else:
            assert response.status_code == 403 and response.json["error"]["code"] == "forbidden", role


def test_a_signed_in_browser_session_cannot_call_the_api(sqlite_app, world):
    client = sign_in(sqlite_app.test_client(), world["people"]["admin"])
    assert client.get("/admin/api/v1/channels").status_code == 401


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(sqlite_app, world):
    client = sign_in(sqlite_app.test_client(), world["people"]["admin"])
    url = console_url(sqlite_app, "admin.bans.create", world["ids"])
    response = client.post(url, data={"kind": "ip", "subject": "192.0.2.9", "reason": "x", "confirmed": "yes"})
    assert response.status_code == 400
    with sqlite_app.app_context():
        assert bans.active_for("ip", "192.0.2.9/32") == []
