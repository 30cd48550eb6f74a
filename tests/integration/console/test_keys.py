"""API keys in the console: created with limits and shown once, changed, disabled, deleted — and
every change is in the key's record for the relays right after the request."""
from __future__ import annotations

import re

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ApiKey, Group
from controlplane.runtime import runtime
from relay.key_cache import KeyCache
from relay.keys import KeyView
from tests.helpers import post_form

from .conftest import client_for

SECRET = re.compile(r"sk-sb-[A-Za-z0-9]{40}")


def relay_view(key_id: int) -> KeyView | None:
    """The key as a relay reads it from Redis (a fresh cache: what the record says now)."""
    return KeyCache(runtime().redis).by_id(key_id)


def create(client, **fields):
    data = {"name": "laptop", "credit_limit": "", "daily_budget": "", "monthly_budget": "", "expires_at": "", "ip_allow": "", **fields}
    return post_form(client, "/keys/new", data)


def test_a_new_key_is_shown_once_and_never_again(as_ana, ana, served):
    response = create(as_ana, name="laptop")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    secret = SECRET.search(response.get_data(as_text=True)).group(0)
    assert "will not be shown again" in response.get_data(as_text=True)
    key = db.session.scalar(select(ApiKey))
    assert key.user_id == ana.id and key.account_id == ana.account_id and secret not in key.key_hash
    for path in ("/keys/", f"/keys/{key.id}", f"/keys/{key.id}/edit", "/", "/playground/"):
        assert secret not in as_ana.get(path).get_data(as_text=True), path
    assert relay_view(key.id).prefix == secret[:10]


def test_limits_budgets_models_expiry_and_addresses_reach_the_relay(as_ana, served):
    response = create(as_ana, credit_limit="20", daily_budget="1.50", monthly_budget="30", models=["gpt-4o-mini"],
                      expires_at="2099-01-01T00:00", ip_allow="10.0.0.0/8\n192.168.1.7")
    assert response.status_code == 200
    key = db.session.scalar(select(ApiKey))
    assert (key.credit_limit, key.daily_budget, key.monthly_budget) == (20_000_000, 1_500_000, 30_000_000)
    view = relay_view(key.id)
    assert (view.credit_limit, view.daily_budget, view.monthly_budget) == (20_000_000, 1_500_000, 30_000_000)
    assert view.models == frozenset({"gpt-4o-mini"}) and [str(n) for n in view.ip_allow] == ["10.0.0.0/8", "192.168.1.7/32"]
    assert view.expires_at == key.expires_at.timestamp()


def test_the_model_list_offers_only_what_the_group_may_use(app, served):
    db.session.add(Group(name="mini-only", model_patterns=["*-mini"], is_default=False))
    db.session.commit()
    from tests import factories
    user = factories.user("narrow@example.com", group="mini-only", password="correct horse battery")
    client = client_for(app, user)
    page = client.get("/keys/new").get_data(as_text=True)
    assert 'value="gpt-4o-mini"' in page and 'value="gpt-4o"' not in page
    refused = create(client, models=["gpt-4o"])
    assert refused.status_code == 400 and "cannot use gpt-4o" in refused.get_data(as_text=True)
    assert db.session.scalar(select(ApiKey.id)) is None


def test_invalid_limits_explain_and_change_nothing(as_ana, served):
    for field, value, message in (("daily_budget", "abc", "Enter an amount"), ("credit_limit", "-5", "cannot be negative"),
                                  ("ip_allow", "not-an-ip", "is not an IP address"), ("expires_at", "2001-01-01T00:00", "must be in the future")):
        response = create(as_ana, **{field: value})
        assert response.status_code == 400 and message in response.get_data(as_text=True), field
    assert db.session.scalar(select(ApiKey.id)) is None


def test_editing_a_key_changes_its_settings_and_not_its_secret(as_ana, served):
    secret = SECRET.search(create(as_ana, daily_budget="1").get_data(as_text=True)).group(0)
    key = db.session.scalar(select(ApiKey))
    form = as_ana.get(f"/keys/{key.id}/edit").get_data(as_text=True)
    assert 'value="1"' in form
    response = post_form(as_ana, f"/keys/{key.id}/edit", {"name": "renamed", "daily_budget": "", "monthly_budget": "5", "credit_limit": "",
                                                          "expires_at": "", "ip_allow": ""})
    assert response.status_code == 302
    db.session.refresh(key)
    assert (key.name, key.daily_budget, key.monthly_budget) == ("renamed", None, 5_000_000)
    view = relay_view(key.id)
    assert view.daily_budget is None and view.monthly_budget == 5_000_000
    assert key.key_hash == __import__("hashlib").sha256(secret.encode()).hexdigest()


def test_disable_enable_and_delete(as_ana, served):
    create(as_ana)
    key = db.session.scalar(select(ApiKey))
    assert post_form(as_ana, f"/keys/{key.id}/status", {"status": "disabled"}, token_from="/keys/").status_code == 302
    assert relay_view(key.id).status == "disabled"
    assert "disabled" in as_ana.get("/keys/").get_data(as_text=True)
    post_form(as_ana, f"/keys/{key.id}/status", {"status": "enabled"}, token_from="/keys/")
    assert relay_view(key.id).status == "enabled"
    confirm = as_ana.get(f"/keys/{key.id}/delete").get_data(as_text=True)
    assert "stops working" in confirm
    assert post_form(as_ana, f"/keys/{key.id}/delete", {}).status_code == 302
    assert relay_view(key.id) is None
    assert as_ana.get(f"/keys/{key.id}").status_code == 404
    assert "No keys yet" in as_ana.get("/keys/").get_data(as_text=True)


def test_the_key_list_has_an_empty_state_and_lists_keys_newest_first(as_ana, served):
    assert "No keys yet" in as_ana.get("/keys/").get_data(as_text=True)
    create(as_ana, name="first")
    create(as_ana, name="second")
    page = as_ana.get("/keys/").get_data(as_text=True)
    assert page.index("second") < page.index("first")


def test_key_detail_shows_budget_use_and_spend(as_ana, served):
    from .conftest import event, ingest

    create(as_ana, daily_budget="2")
    key = db.session.scalar(select(ApiKey))
    ingest(event(key, cost=250_000), event(key, model="gpt-4o", cost=500_000))
    page = as_ana.get(f"/keys/{key.id}").get_data(as_text=True)
    assert "$0.75" in page and "gpt-4o" in page and "Today (UTC)" in page


def test_an_operator_disabled_key_stays_disabled_whatever_its_owner_does(app, as_ana, ana, served):
    from controlplane.models import Role
    from controlplane.services import users
    from tests import factories

    from .conftest import PASSWORD

    create(as_ana)
    key = db.session.scalar(select(ApiKey))
    operator = users.create_operator(factories.ACTOR, "op@example.com", PASSWORD, Role.OPERATOR)
    as_op = client_for(app, operator)
    disabled = post_form(as_op, f"/admin/users/{ana.id}/keys/{key.id}/status", {"status": "disabled", "confirmed": "yes"},
                         token_from=f"/admin/users/{ana.id}")
    assert disabled.status_code == 302 and relay_view(key.id).status == "disabled"
    page = as_ana.get(f"/keys/{key.id}").get_data(as_text=True)
    assert "disabled by an operator" in page and ">Enable</button>" not in page
    # the owner posts the enable form anyway: refused, and the relay still refuses the key
    post_form(as_ana, f"/keys/{key.id}/status", {"status": "enabled"}, token_from="/keys/")
    db.session.refresh(key)
    assert key.status == "disabled" and key.disabled_by == "operator"
    assert relay_view(key.id).status == "disabled"
    assert "only an operator can enable it" in as_ana.get("/keys/").get_data(as_text=True)
    # an operator's enable is the way back, and then the owner decides again
    post_form(as_op, f"/admin/users/{ana.id}/keys/{key.id}/status", {"status": "enabled"}, token_from=f"/admin/users/{ana.id}")
    assert relay_view(key.id).status == "enabled"
    post_form(as_ana, f"/keys/{key.id}/status", {"status": "disabled"}, token_from="/keys/")
    post_form(as_ana, f"/keys/{key.id}/status", {"status": "enabled"}, token_from="/keys/")
    assert relay_view(key.id).status == "enabled"
