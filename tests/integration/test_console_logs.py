"""Request logs in the console: filters, cursor pages, one request with its decision trace, and a
CSV export that streams in constant memory however many rows match."""
from __future__ import annotations

import csv
import io
import time
import tracemalloc
from datetime import datetime, timezone

from sqlalchemy import insert

from controlplane.extensions import db
from controlplane.models import RequestLog
from controlplane.queries import logs as log_queries
from relay.usage import UsageEvent
from tests import factories
from tests.console import as_operator, operator, person, sign_in, text  # noqa: F401
from workers.usage import write_batch


def ingest(*events: UsageEvent) -> None:
    write_batch(list(events))
    db.session.commit()


def event(request_id: str, user, key_id=None, **fields) -> UsageEvent:
    started = fields.pop("started_at", time.time())
    defaults = dict(endpoint="/v1/chat/completions", status=200, account_id=user.account_id, user_id=user.id, api_key_id=key_id,
                    model="gpt-4o-mini", input_tokens=100, output_tokens=20, cost=1_000, latency_ms=800, ttft_ms=200)
    defaults.update(fields)
    return UsageEvent(request_id=request_id, started_at=started, finished_at=started + 1, **defaults)


def ids_on(page: str) -> set[str]:
    return {rid for rid in ("req_a", "req_b", "req_c", "req_d") if f'<code class="rid">{rid}</code>' in page}


def test_filters_narrow_the_log(as_operator):
    ana, bob = factories.user("ana@example.com"), factories.user("bob@example.com")
    key, _ = factories.api_key(ana)
    channel = factories.channel("https://a.example.com/v1", name="Main")
    hour_ago = time.time() - 3600
    ingest(event("req_a", ana, key.id, channel_id=channel.id, started_at=hour_ago - 7200),
           event("req_b", ana, key.id, model="gpt-4o", status=429, error_code="rate_limited", cost=0),
           event("req_c", bob, status=502, error_code="upstream_error", cost=0, channel_id=channel.id),
           event("req_d", bob, model="o3-mini"))

    def found(query: str) -> set[str]:
        return ids_on(text(as_operator.get("/admin/logs/?" + query)))

    assert found("") == {"req_a", "req_b", "req_c", "req_d"}
    assert found("user=ana@example.com") == {"req_a", "req_b"} and found(f"user={bob.id}") == {"req_c", "req_d"}
    assert found(f"key={key.prefix}") == {"req_a", "req_b"} and found("model=gpt-4o") == {"req_b"}
    assert found(f"channel={channel.id}") == {"req_a", "req_c"}
    assert found("status=errors") == {"req_b", "req_c"} and found("status=5xx") == {"req_c"} and found("status=429") == {"req_b"}
    assert found("error_code=upstream_error") == {"req_c"}
    assert found("range=1h") == {"req_b", "req_c", "req_d"}
    since = datetime.fromtimestamp(hour_ago - 9000, timezone.utc).strftime("%Y-%m-%dT%H:%M")
    until = datetime.fromtimestamp(hour_ago - 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M")
    assert found(f"since={since}&until={until}") == {"req_a"}
    assert "No request matches" in text(as_operator.get("/admin/logs/?model=nothing"))
    assert "Enter a status code" in text(as_operator.get("/admin/logs/?status=teapot"))


def test_pages_continue_from_a_cursor(as_operator):
    user = factories.user()
    ingest(*(event(f"req_{c}", user) for c in "abcd"))
    first = text(as_operator.get("/admin/logs/?per_page=3"))
    assert ids_on(first) == {"req_b", "req_c", "req_d"}
    older = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = text(as_operator.get(older))
    assert ids_on(second) == {"req_a"} and "End of the log" in second


def test_one_request_shows_its_trace_with_upstream_messages_escaped(as_operator):
    user = factories.user("trace@example.com")
    channel = factories.channel("https://a.example.com/v1", name="Flaky")
    trace = [{"step": "candidates", "channels": [channel.id]}, {"step": "pick", "channel": channel.id, "key": 7, "panic": None},
             {"step": "attempt", "channel": channel.id, "key": 7, "status": 500, "kind": "transient", "ms": 120,
              "error": "<script>alert(1)</script> overloaded"},
             {"step": "attempt", "channel": channel.id, "key": 8, "status": 200, "ms": 640}]
    ingest(event("req_traced", user, channel_id=channel.id, model="<b>m</b>", trace=trace))
    page = text(as_operator.get("/admin/logs/req_traced"))
    assert "<strong>Attempt 1 on Flaky, key #7</strong> — HTTP 500 in 120 ms transient" in page
    assert "upstream said: &lt;script&gt;alert(1)&lt;/script&gt; overloaded" in page and 'class="tone-bad"' in page
    assert "<strong>Picked Flaky, key #7</strong>" in page and "panic=None" not in page
    assert "<script>alert(1)" not in page and "<b>m</b>" not in page
    assert "trace@example.com" in page and "Refund" in page
    assert as_operator.get("/admin/logs/req_missing").status_code == 404


def test_the_csv_export_keeps_the_filters_and_defuses_formulas(as_operator):
    user = factories.user("csv@example.com")
    ingest(event("req_a", user, model="=HYPERLINK(\"http://evil\")", cost=1_234_567), event("req_b", user, status=500, cost=0))
    response = as_operator.get("/admin/logs/export.csv?status=2xx", buffered=True)
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text(response))))
    assert [r["request_id"] for r in rows] == ["req_a"]
    assert rows[0]["model"].startswith("'=") and rows[0]["cost_usd"] == "1.234567" and rows[0]["user_email"] == "csv@example.com"
    assert rows[0]["cost_micro_usd"] == "1234567" and rows[0]["stream"] == "false"  # exact µ$; the same flag spelling as the usage CSV


def _fill(count: int, start: int) -> None:
    now = datetime.now(timezone.utc)
    db.session.execute(insert(RequestLog), [
        dict(request_id=f"req_{i:08d}", started_at=now, finished_at=now, endpoint="/v1/chat/completions", status=200, model="gpt-4o-mini",
             input_tokens=i, cache_read_tokens=0, cache_write_tokens=0, output_tokens=0, reasoning_tokens=0, cost=i, usage_source="upstream",
             stream=False, trace=[]) for i in range(start, start + count)])
    db.session.commit()


def _export_peak() -> tuple[int, int]:
    tracemalloc.start()
    lines = sum(chunk.count("\n") for chunk in log_queries.csv_chunks(log_queries.LogFilters.from_args({})))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return lines, peak


def test_the_export_streams_in_constant_memory(sql_app):
    """Six times the rows, the same memory: rows are fetched in batches and written out in chunks
    (holding 10,000 more rows would take several more megabytes)."""
    _fill(2_000, 0)
    _export_peak()  # warm up caches and compiled statements
    small_lines, small_peak = _export_peak()
    _fill(10_000, 2_000)
    big_lines, big_peak = _export_peak()
    assert (small_lines, big_lines) == (2_001, 12_001)
    assert big_peak < small_peak + 1_000_000
    client = sign_in(sql_app.test_client(), person("support"))
    streamed = client.get("/admin/logs/export.csv")
    assert streamed.is_streamed
    streamed.close()
    # Read inside the request, as a server would (the test client's own app context ends at return).
    assert text(client.get("/admin/logs/export.csv", buffered=True)).count("\n") == 12_001
