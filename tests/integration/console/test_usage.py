"""The usage page: trends from the hourly rollups, breakdowns by key and model, the per-request
table with its five token kinds, one request's details, and the streamed CSV export."""
from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timezone

import pytest

from controlplane.console.usage_data import period_of, range_start
from tests import factories

from .conftest import event, ingest

DAY = 86_400


@pytest.fixture
def history(ana, served):
    """A week of traffic on two keys and two models."""
    laptop, _ = factories.api_key(ana, name="laptop")
    server, _ = factories.api_key(ana, name="server")
    now = time.time()
    events = [event(laptop, "gpt-4o-mini", cost=1_000, started_at=now - d * DAY) for d in range(7)]
    events += [event(server, "gpt-4o", cost=20_000, started_at=now - d * DAY, latency_ms=900) for d in (0, 1)]
    events.append(event(server, "gpt-4o", cost=0, status=502, started_at=now))
    ingest(*events)
    return {"laptop": laptop, "server": server, "events": events}


def test_the_series_has_one_point_per_period_and_zeros_for_gaps(as_ana, history):
    data = as_ana.get("/usage/series.json?range=30d&by=model").get_json()
    assert data["granularity"] == "day" and len(data["labels"]) == 30
    by_name = {s["name"]: s for s in data["series"]}
    assert sum(by_name["gpt-4o-mini"]["cost"]) == 7_000 and sum(by_name["gpt-4o"]["cost"]) == 40_000
    assert by_name["gpt-4o-mini"]["cost"].count(0) == 23
    assert sum(by_name["gpt-4o"]["requests"]) == 3  # the failed request counts as a request


def test_breakdown_by_key_names_the_keys(as_ana, history):
    data = as_ana.get("/usage/series.json?range=7d&by=key").get_json()
    assert {s["name"] for s in data["series"]} == {"laptop", "server"}


@pytest.mark.parametrize("name,granularity,count", [("24h", "hour", 24), ("12w", "week", 12), ("12m", "month", 12)])
def test_ranges_have_their_granularity(as_ana, history, name, granularity, count):
    data = as_ana.get(f"/usage/series.json?range={name}").get_json()
    assert data["granularity"] == granularity and len(data["labels"]) == count


def test_periods_are_utc_calendar_periods():
    moment = datetime(2031, 3, 5, 14, 30, tzinfo=timezone.utc)  # a Wednesday
    assert period_of(moment, "week") == datetime(2031, 3, 3, tzinfo=timezone.utc)
    assert period_of(moment, "month") == datetime(2031, 3, 1, tzinfo=timezone.utc)
    granularity, start = range_start("12m", moment)
    assert (granularity, start) == ("month", datetime(2030, 4, 1, tzinfo=timezone.utc))


def test_the_page_shows_totals_breakdowns_and_each_request(as_ana, history):
    page = as_ana.get("/usage/?range=7d").get_data(as_text=True)
    assert "$0.05" in page  # 7 × $0.001 + 2 × $0.02, two decimals in the summary
    assert page.count('<a href="/usage/requests/') == 10
    assert "laptop" in page and "server" in page and "502 error" in page
    filtered = as_ana.get(f"/usage/?range=7d&key={history['server'].id}&status=error").get_data(as_text=True)
    assert filtered.count('<a href="/usage/requests/') == 1


def test_request_details_show_the_five_token_kinds_and_the_cost(as_ana, history):
    rid = history["events"][0].request_id
    page = as_ana.get(f"/usage/requests/{rid}").get_data(as_text=True)
    for text in ("Cached input tokens", "Cache write tokens", "Reasoning tokens", "$0.001000", "420 ms", "laptop"):
        assert text in page


def test_the_request_table_pages_by_keyset(as_ana, ana, served):
    key, _ = factories.api_key(ana)
    now = time.time()
    ingest(*[event(key, started_at=now - i) for i in range(60)])
    first = as_ana.get("/usage/").get_data(as_text=True)
    assert first.count('<a href="/usage/requests/') == 50 and "Older requests" in first
    older = first.split('href="/usage/?before=')[1].split('"')[0].replace("&amp;", "&")
    second = as_ana.get("/usage/?before=" + older).get_data(as_text=True)
    assert second.count('<a href="/usage/requests/') == 10 and "Older requests" not in second


def test_the_csv_export_streams_every_request_with_its_tokens_and_cost(as_ana, ana, served, monkeypatch):
    from controlplane.console import usage

    monkeypatch.setattr(usage, "EXPORT_CHUNK", 7)  # several chunks from a small table
    key, _ = factories.api_key(ana, name="=cmd|' /C calc'!A0")
    now = time.time()
    ingest(*[event(key, cost=1_234, started_at=now - i) for i in range(20)])
    response = as_ana.get("/usage/export.csv?range=7d")
    assert response.is_streamed and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 20 and len({r["request_id"] for r in rows}) == 20
    assert rows[0]["cost_usd"] == "0.001234" and rows[0]["reasoning_tokens"] == "7" and rows[0]["cache_write_tokens"] == "5"
    assert rows[0]["cost_micro_usd"] == "1234" and rows[0]["stream"] in ("true", "false")  # the same spelling as the operator's CSV
    assert rows[0]["key"].startswith("'=")  # a spreadsheet will not run it


def test_old_requests_stay_out_of_a_short_range(as_ana, ana, served):
    key, _ = factories.api_key(ana)
    ingest(event(key, started_at=time.time() - 10 * DAY))
    assert "No requests in this range" in as_ana.get("/usage/?range=7d").get_data(as_text=True)
    assert as_ana.get("/usage/?range=30d").get_data(as_text=True).count('<a href="/usage/requests/') == 1


def test_breakdowns_and_series_agree_on_both_sql_back_ends(sql_app):
    """The rollup arithmetic (SQL sums, histograms read as raw JSON) on SQLite and PostgreSQL."""
    from controlplane.console.usage_data import breakdown, series
    from controlplane.models import UsageRollup

    from .conftest import person

    user = person("pg@example.com")
    one, _ = factories.api_key(user, name="one")
    two, _ = factories.api_key(user, name="two")
    now = time.time()
    ingest(event(one, "m1", cost=1_000, started_at=now, latency_ms=40), event(one, "m2", cost=2_000, started_at=now - DAY, latency_ms=40),
           event(two, "m1", cost=4_000, started_at=now, latency_ms=2_500))
    granularity, since = range_start("7d")
    overall, by_key, by_model = breakdown([UsageRollup.account_id == user.account_id], since)
    assert (overall["requests"], overall["cost"], overall["reasoning_tokens"]) == (3, 7_000, 21)
    assert (overall["p50"], overall["p95"]) == (50, 3_000)
    assert [(k["name"], k["cost"]) for k in by_key] == [(two.id, 4_000), (one.id, 3_000)]
    assert [(m["name"], m["cost"], m["p50"]) for m in by_model] == [("m1", 5_000, 50), ("m2", 2_000, 50)]
    data = series([UsageRollup.account_id == user.account_id], since, granularity, "model")
    assert {s["name"]: sum(s["cost"]) for s in data["series"]} == {"m1": 5_000, "m2": 2_000}


def test_a_deleted_keys_history_stays_reachable(as_ana, ana, served):
    from controlplane.services import keys

    key, _ = factories.api_key(ana, name="retired")
    ingest(event(key, cost=3_000))
    keys.delete_key(factories.ACTOR, key)
    page = as_ana.get(f"/usage/?key={key.id}").get_data(as_text=True)
    assert "retired" in page and "$0.003000" in page
    assert as_ana.get(f"/keys/{key.id}").status_code == 404  # but the key itself is gone
