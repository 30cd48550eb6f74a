"""The dashboard, from rollups: totals, revenue, upstream cost and margin (where a channel's cost is
set), error rate and latency percentiles per range, broken down by model and by channel."""
from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import func, select

from controlplane.extensions import db
from controlplane.models import ChannelRollup, UsageRollup
from controlplane.queries import dashboard
from relay.usage import UsageEvent
from tests import factories
from tests.console import person, sign_in, text
from workers.usage import write_batch


def price_since_last_week(model: str, input: str, output: str):
    """A price that was in force when the test's traffic started (the service only schedules forward)."""
    row = factories.price(model, input=input, output=output)
    row.effective_from = row.effective_from - timedelta(days=7)
    db.session.commit()


def traffic(user, channel_id: int, model: str, count: int, ago: float = 60, status: int = 200, latency: int = 180, tokens: int = 1_000_000):
    """`count` requests of `tokens` input tokens each, ingested as the worker does."""
    now = time.time() - ago
    events = [UsageEvent(request_id=f"req_{model}_{channel_id}_{ago}_{status}_{i}", started_at=now, finished_at=now + 1,
                         endpoint="/v1/chat/completions", status=status, account_id=user.account_id, user_id=user.id, model=model,
                         channel_id=channel_id, input_tokens=tokens if status == 200 else 0, cost=0 if status >= 400 else 2_000_000,
                         latency_ms=latency, ttft_ms=latency // 4) for i in range(count)]
    write_batch(events)
    db.session.commit()


def test_totals_margin_and_percentiles_come_from_rollups(sql_app):
    user = factories.user()
    price_since_last_week("gpt-4o", input="2", output="8")  # a request of 1M input tokens lists at $2
    costed = factories.channel("https://a.example.com/v1", models=("gpt-4o",), name="Reseller", cost_bp=6000)
    plain = factories.channel("https://b.example.com/v1", models=("gpt-4o",), name="Direct")
    traffic(user, costed.id, "gpt-4o", 3, latency=180)
    traffic(user, plain.id, "gpt-4o", 1, latency=900)
    traffic(user, plain.id, "gpt-4o", 1, status=502, latency=40)
    traffic(user, plain.id, "gpt-4o", 5, ago=3 * 86400)  # outside the last day
    day = dashboard.report("day", "channel")
    t = day.totals
    assert (t.requests, t.errors, t.cost, t.upstream_cost) == (5, 1, 8_000_000, 3 * 1_200_000)
    assert t.margin == 3 * 2_000_000 - 3 * 1_200_000  # only the channel whose cost is known
    assert t.error_rate == 0.2 and t.latency(0.5) == 200 and t.latency(0.95) == 1_000
    by_channel = {label: (g.requests, costed_) for _, label, g, costed_ in day.breakdown}
    assert by_channel == {"Reseller": (3, True), "Direct": (2, False)}
    assert dashboard.report("7d", "model").totals.requests == 10
    assert db.session.scalar(select(func.sum(ChannelRollup.requests))) == db.session.scalar(select(func.sum(UsageRollup.requests))) == 10


def test_the_page_and_its_chart_data(app):
    client = sign_in(app.test_client(), person("support"))
    assert "No traffic in this range yet" in text(client.get("/admin/dashboard/"))
    user = factories.user()
    channel = factories.channel("https://a.example.com/v1", models=("gpt-4o-mini",), name="Main", cost_bp=5000)
    price_since_last_week("gpt-4o-mini", input="1", output="1")
    traffic(user, channel.id, "gpt-4o-mini", 4)
    page = text(client.get("/admin/dashboard/?range=day&by=model"))
    assert "$8.00" in page and "$2.00" in page and "$6.00" in page  # revenue, upstream cost, margin
    assert "gpt-4o-mini" in page and "Channel health" in page
    data = client.get("/admin/dashboard/data.json?range=7d&by=channel").json
    assert data["range"] == "7d" and len(data["labels"]) >= 168 and sum(data["requests"]) == 4
    assert data["by_requests"] == {"Main": data["requests"]} and data["totals"]["margin_micro_usd"] == 6_000_000


def test_channel_state_changes_show_as_health(app):
    from controlplane.models import ChannelStatus
    from controlplane.services import channels

    client = sign_in(app.test_client(), person("support"))
    channel = factories.channel("https://a.example.com/v1", name="Flaky")
    channels.set_status(factories.ACTOR, channel, ChannelStatus.DISABLED, "upstream incident")
    page = text(client.get("/admin/dashboard/"))
    assert "Flaky" in page and "upstream incident" in page
