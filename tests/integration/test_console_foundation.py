"""The minimal operator console of the foundation: sign-in, roles, channels, prices, top-ups."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Channel, LedgerEntry, ModelPrice, Role
from controlplane.services import users
from tests import factories
from tests.helpers import login, post_form

PASSWORD = "correct horse battery"


@pytest.fixture
def operator(app):
    return users.create_operator(factories.ACTOR, "op@example.com", PASSWORD, Role.OPERATOR)


@pytest.fixture
def signed_in(client, operator):
    assert login(client, operator.email, PASSWORD).status_code == 302
    return client


@pytest.mark.parametrize("path", ["/admin/", "/admin/channels/", "/admin/channels/new", "/admin/prices/", "/admin/users/"])
def test_anonymous_browsers_are_sent_to_sign_in_and_json_callers_get_401(client, path):
    page = client.get(path)
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    api = client.get(path, headers={"Accept": "application/json"})
    assert api.status_code == 401


def test_a_customer_cannot_open_the_operator_console(client, app):
    factories.user("cust@example.com", password=PASSWORD)
    login(client, "cust@example.com", PASSWORD)
    assert client.get("/admin/channels/").status_code == 403
    assert client.get("/admin/channels/", headers={"Accept": "application/json"}).status_code == 403


def test_wrong_password_is_refused_and_repeated_failures_are_throttled(client, operator):
    for _ in range(10):
        assert login(client, operator.email, "wrong password").status_code == 401
    assert login(client, operator.email, PASSWORD).status_code == 429


def test_create_a_channel_and_see_only_the_last_four_characters_of_its_keys(signed_in):
    response = post_form(signed_in, "/admin/channels/new", {
        "name": "Primary OpenAI", "type": "openai", "base_url": "https://api.openai.com/v1",
        "models": "gpt-4o\ngpt-4o-mini", "model_map-0-public": "gpt-4", "model_map-0-upstream": "gpt-4-0613", "groups": "", "priority": "5", "weight": "3",
        "tag": "prod", "keys": "sk-live-secret-AAAA1111\nsk-live-secret-BBBB2222",
    })
    assert response.status_code == 302
    channel = db.session.scalar(select(Channel))
    assert channel.models == ["gpt-4o", "gpt-4o-mini"] and channel.model_map == {"gpt-4": "gpt-4-0613"}
    assert [k.last4 for k in channel.keys] == ["1111", "2222"]
    assert "sk-live-secret" not in channel.keys[0].secret_encrypted
    page = signed_in.get(f"/admin/channels/{channel.id}").get_data(as_text=True)
    assert "••••1111" in page and "sk-live-secret" not in page
    edit = signed_in.get(f"/admin/channels/{channel.id}/edit").get_data(as_text=True)
    assert "sk-live-secret" not in edit and "ChannelKey" not in edit


@pytest.mark.parametrize("field,value", [("base_url", "ftp://x"), ("base_url", "http://169.254.169.254/latest"), ("weight", "-1"), ("models", "")])
def test_an_invalid_channel_form_explains_and_changes_nothing(signed_in, field, value):
    data = {"name": "c", "type": "openai", "base_url": "https://api.example.com/v1", "models": "m", "priority": "0", "weight": "1", "keys": "sk-1"}
    data[field] = value
    response = post_form(signed_in, "/admin/channels/new", data)
    assert response.status_code == 400
    assert db.session.scalar(select(Channel.id)) is None
    assert 'class="error"' in response.get_data(as_text=True)


def test_set_a_price_and_top_up_a_user(signed_in):
    response = post_form(signed_in, "/admin/prices/", {"model": "gpt-4o", "input": "2.50", "output": "10", "cache_read": "1.25", "effective_from": ""})
    assert response.status_code == 302
    row = db.session.scalar(select(ModelPrice))
    assert (row.input, row.output, row.cache_read, row.reasoning) == (2_500_000, 10_000_000, 1_250_000, None)
    customer = factories.user("buyer@example.com")
    response = post_form(signed_in, f"/admin/users/{customer.id}/topup", {"amount": "20", "reason": "wire transfer", "confirmed": "yes"},
                         token_from=f"/admin/users/{customer.id}")
    assert response.status_code == 302
    entry = db.session.scalar(select(LedgerEntry))
    assert entry.amount == 20_000_000 and entry.operator_id is not None and entry.reason == "wire transfer"
    page = signed_in.get(f"/admin/users/{customer.id}").get_data(as_text=True)
    assert "$20.000000" in page


def test_a_price_change_without_notice_needs_a_reason(signed_in):
    from controlplane.models import utcnow

    factories.price("gpt-4o", input="2.5", output="10")
    soon = utcnow().strftime("%Y-%m-%dT%H:%M")
    response = post_form(signed_in, "/admin/prices/", {"model": "gpt-4o", "input": "3", "output": "12", "effective_from": soon})
    assert response.status_code == 400
    assert db.session.scalar(select(db.func.count()).select_from(ModelPrice)) == 1
    # without a date, a change gets the notice period instead of being refused
    response = post_form(signed_in, "/admin/prices/", {"model": "gpt-4o", "input": "3", "output": "12", "effective_from": ""})
    assert response.status_code == 302 and db.session.scalar(select(db.func.count()).select_from(ModelPrice)) == 2


def test_support_can_read_but_not_top_up(client, app):
    users.create_operator(factories.ACTOR, "help@example.com", PASSWORD, Role.SUPPORT)
    customer = factories.user("someone@example.com")
    login(client, "help@example.com", PASSWORD)
    assert client.get(f"/admin/users/{customer.id}").status_code == 200
    assert post_form(client, f"/admin/users/{customer.id}/topup", {"amount": "5", "reason": "x", "confirmed": "yes"},
                     token_from=f"/admin/users/{customer.id}").status_code == 403
    assert db.session.scalar(select(LedgerEntry.id)) is None


def test_user_names_are_escaped(signed_in):
    factories.user("<script>x</script>@example.com".replace("<", "a").replace(">", "b"))  # emails cannot hold tags
    factories.channel("https://api.example.com/v1", name="<img src=x onerror=alert(1)>")
    page = signed_in.get("/admin/channels/").get_data(as_text=True)
    assert "<img src=x" not in page and "&lt;img src=x" in page
