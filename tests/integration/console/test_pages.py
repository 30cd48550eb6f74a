"""Each console page renders for a customer, sends anonymous browsers to sign in (JSON callers get
401), and the public pricing page and its JSON need no sign-in."""
from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.models import utcnow
from tests import factories

PAGES = ["/", "/keys/", "/keys/new", "/usage/", "/billing/", "/billing/ledger", "/playground/", "/organisation", "/account"]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_browsers_are_sent_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("path", ["/keys/", "/usage/series.json", "/playground/requests/req_x"])
def test_anonymous_json_callers_get_401(client, path):
    assert client.get(path, headers={"Accept": "application/json"}).status_code == 401


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_the_console_navigation_and_balance(as_ana, served, path):
    response = as_ana.get(path)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'aria-label="Console"' in page and "Balance <strong" in page and "$10.00" in page
    assert 'aria-current="page"' in page


def test_the_home_page_gives_the_base_url_and_first_steps(as_ana, served):
    page = as_ana.get("/").get_data(as_text=True)
    assert "/v1</code>" in page and "create your first key" in page


def test_public_pricing_lists_served_models_with_every_kind_and_upcoming_changes(client, served):
    factories.price("gpt-4o", input="2", output="8", cache_read="0.5", effective_from=utcnow() + timedelta(days=10))
    factories.price("unserved-model", input="1", output="1")  # priced but no channel: not on offer
    page = client.get("/models").get_data(as_text=True)
    assert client.get("/models").status_code == 200
    assert "gpt-4o-mini" in page and "unserved-model" not in page
    assert "$2.50" in page and "$10.00" in page and "$0.15" in page and "From " in page and "$$" not in page
    data = client.get("/models.json").get_json()
    by_id = {m["id"]: m for m in data["data"]}
    assert set(by_id) == {"gpt-4o", "gpt-4o-mini"}
    current = by_id["gpt-4o"]["current"]
    assert current["usd_per_1m_tokens"] == {"input": "2.500000", "cache_read": "2.500000", "cache_write": "2.500000",
                                            "output": "10.000000", "reasoning": "10.000000"}
    assert current["micro_usd_per_1m_tokens"]["input"] == 2_500_000 and current["usd_per_request"] == "0.000000"
    assert [u["micro_usd_per_1m_tokens"]["cache_read"] for u in by_id["gpt-4o"]["upcoming"]] == [500_000]


def test_signed_in_customers_see_their_group_discount_on_the_pricing_page(app, served):
    from controlplane.extensions import db
    from controlplane.models import Group

    from .conftest import client_for

    db.session.add(Group(name="partners", multiplier_bp=8_000))
    db.session.commit()
    partner = factories.user("p@example.com", group="partners", password="correct horse battery")
    assert "pays 80.00% of these prices" in client_for(app, partner).get("/models").get_data(as_text=True)
