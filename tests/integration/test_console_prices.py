"""Model prices in the console: a first price starts now, a change gives 7 days' notice by default
(earlier only with a reason), the form says which rule applies; no
negative prices, scheduled changes listed and cancellable, JSON export and all-or-nothing import,
and served models without a price flagged."""
from __future__ import annotations

import io
import json
import re
from datetime import timedelta

from sqlalchemy import func, select

from controlplane.extensions import db
from controlplane.models import ModelPrice, utcnow
from tests import factories
from tests.console import as_operator, operator, post, text  # noqa: F401  (fixtures)


def rows() -> int:
    return db.session.scalar(select(func.count()).select_from(ModelPrice))


def test_a_first_price_starts_now_and_a_change_without_a_date_gives_seven_days_notice(as_operator):
    assert post(as_operator, "/admin/prices/", {"model": "fresh-model", "input": "1", "output": "2", "effective_from": ""}).status_code == 302
    first = db.session.scalar(select(ModelPrice).where(ModelPrice.model == "fresh-model"))
    assert first.effective_from <= utcnow() and first.reason is None  # routable at once
    assert "no price yet" not in text(as_operator.get("/admin/prices/"))
    assert post(as_operator, "/admin/prices/", {"model": "fresh-model", "input": "3", "output": "4", "effective_from": ""}).status_code == 302
    change = db.session.scalars(select(ModelPrice).where(ModelPrice.model == "fresh-model").order_by(ModelPrice.id.desc())).first()
    assert utcnow() + timedelta(days=7) <= change.effective_from <= utcnow() + timedelta(days=7, minutes=2)


def test_the_form_says_which_rule_applies(as_operator):
    factories.channel("https://a.example.com/v1", models=("gpt-4o", "mystery-model"))
    factories.price("gpt-4o")
    first = text(as_operator.get("/admin/prices/?model=mystery-model"))
    assert "mystery-model has no price yet:" in first and "its first price starts now" in first
    change = text(as_operator.get("/admin/prices/?model=gpt-4o"))
    assert "gpt-4o has a price:" in change and "7 days' notice" in change
    set_form = change.split('id="card-2"')[0]  # the import form below has its own date
    assert not re.search(r'name="effective_from"[^>]*value="\d', set_form)  # filled in when sent, never stale


def test_a_new_model_can_be_priced_at_once_with_every_component(as_operator):
    response = post(as_operator, "/admin/prices/", {"model": "gpt-4o", "input": "2.50", "cache_read": "1.25", "cache_write": "3.125",
                                                    "output": "10", "reasoning": "12", "per_request": "0.001", "max_output_tokens": "16384",
                                                    "effective_from": ""})
    assert response.status_code == 302
    row = db.session.scalar(select(ModelPrice))
    assert (row.input, row.cache_read, row.cache_write, row.output, row.reasoning, row.per_request, row.max_output_tokens) == (
        2_500_000, 1_250_000, 3_125_000, 10_000_000, 12_000_000, 1_000, 16_384)
    page = text(as_operator.get("/admin/prices/"))
    assert "$2.50" in page and "$3.125" in page and "$0.001000" in page


def test_an_earlier_change_needs_a_reason_and_a_scheduled_one_does_not(as_operator):
    factories.price("gpt-4o", input="2.5", output="10")
    soon = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    refused = post(as_operator, "/admin/prices/", {"model": "gpt-4o", "input": "3", "output": "12", "effective_from": soon})
    assert refused.status_code == 400 and "needs a reason" in text(refused) and rows() == 1
    assert post(as_operator, "/admin/prices/", {"model": "gpt-4o", "input": "3", "output": "12", "effective_from": soon,
                                                "reason": "upstream raised prices"}).status_code == 302
    later = (utcnow() + timedelta(days=8)).strftime("%Y-%m-%dT%H:%M")
    assert post(as_operator, "/admin/prices/", {"model": "gpt-4o", "input": "2", "output": "8", "effective_from": later}).status_code == 302
    page = text(as_operator.get("/admin/prices/"))
    assert page.count("scheduled</span>") == 2 and "upstream raised prices" in page


def test_negative_or_malformed_prices_are_refused_and_nothing_changes(as_operator):
    for field, value in (("input", "-1"), ("output", "ten"), ("cache_read", "0.0000001"), ("per_request", "-0.5")):
        data = {"model": "m", "input": "1", "output": "1", field: value}
        response = post(as_operator, "/admin/prices/", data)
        assert response.status_code == 400, field
        assert 'class="error"' in text(response)
    assert rows() == 0


def test_cancel_a_scheduled_price_but_not_the_current_one(as_operator):
    current = factories.price("gpt-4o")
    scheduled = factories.price("gpt-4o", input="1", output="2", effective_from=utcnow() + timedelta(days=9))
    assert "Cancel the price of gpt-4o" in text(post(as_operator, f"/admin/prices/{scheduled.id}/cancel"))
    post(as_operator, f"/admin/prices/{scheduled.id}/cancel", confirm=True)
    assert rows() == 1
    post(as_operator, f"/admin/prices/{current.id}/cancel", confirm=True)
    assert rows() == 1


def test_export_then_import_changes_nothing(as_operator):
    factories.price("gpt-4o", input="2.5", output="10", cache_read="1.25")
    factories.price("gpt-4o", input="2", output="8", effective_from=utcnow() + timedelta(days=8))
    exported = as_operator.get("/admin/prices/export.json")
    document = json.loads(exported.data)
    assert "attachment" in exported.headers["Content-Disposition"]
    assert [(p["model"], p["input"], p["cache_read"]) for p in document["prices"]] == [("gpt-4o", "2.5", "1.25"), ("gpt-4o", "2", None)]
    response = post(as_operator, "/admin/prices/import", {"file": (io.BytesIO(exported.data), "prices.json")}, content_type="multipart/form-data")
    assert response.status_code == 302 and rows() == 2


def test_import_schedules_every_price_or_none(as_operator):
    factories.price("gpt-4o")
    good = {"prices": [{"model": "new-model", "input": "1", "output": "2"}, {"model": "gpt-4o", "input": "3", "output": "9"}]}
    bad = {"prices": good["prices"] + [{"model": "broken", "input": "-1", "output": "2"}]}
    later = (utcnow() + timedelta(days=7, hours=1)).strftime("%Y-%m-%dT%H:%M")
    refused = post(as_operator, "/admin/prices/import", {"document": json.dumps(bad), "effective_from": later})
    assert refused.status_code == 400 and "Price 3 (broken)" in text(refused) and rows() == 1
    notice = post(as_operator, "/admin/prices/import", {"document": json.dumps(good), "effective_from": ""})
    assert notice.status_code == 400 and "needs a reason" in text(notice) and rows() == 1
    assert post(as_operator, "/admin/prices/import", {"document": json.dumps(good), "effective_from": later}).status_code == 302
    assert rows() == 3
    assert "not JSON" in text(post(as_operator, "/admin/prices/import", {"document": "{oops"}))


def test_served_models_without_a_price_are_flagged(as_operator):
    factories.channel("https://a.example.com/v1", models=("gpt-4o", "mystery-model"), model_map={"alias": "gpt-4o"})
    factories.price("gpt-4o")
    page = text(as_operator.get("/admin/prices/"))
    assert "not routable" in page and ">mystery-model</a>" in page and ">alias</a>" in page and ">gpt-4o</a>" not in page


def test_change_starts_from_the_current_price(as_operator):
    factories.price("gpt-4o", input="2.5", output="10", cache_read="1.25")
    page = text(as_operator.get("/admin/prices/?model=gpt-4o"))
    assert re.search(r'name="input"[^>]*value="2.5"', page) and re.search(r'name="cache_read"[^>]*value="1.25"', page)
