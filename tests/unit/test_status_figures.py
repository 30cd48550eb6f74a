"""The status page's arithmetic, pure: uptime reads rounded down, windows nest, states take the worst."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.filters import uptime
from controlplane.models import Incident
from controlplane.queries.status import Entry, Window, _parts


@pytest.mark.parametrize("share,text", [(1.0, "100.00%"), (0.99999, "99.99%"), (0.9999, "99.99%"), (0.95, "95.00%"), (0.0, "0.00%"),
                                        (None, "no traffic")])
def test_uptime_never_rounds_up_to_a_better_figure(share, text):
    assert uptime(share) == text


def test_an_hour_counts_in_every_window_that_holds_it_and_the_last_hour_sets_the_state():
    now = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)
    rows = [(now.replace(minute=0), "m", 1, 20, 2, 2, None, None),  # this hour: 10% failed
            (now - timedelta(hours=5), "m", 1, 10, 0, 0, None, None),
            (now - timedelta(days=3), "m", 1, 10, 0, 0, None, None),
            (now - timedelta(days=20), "m", 1, 10, 10, 10, None, None),
            (now - timedelta(days=40), "m", 1, 999, 999, 999, None, None)]  # outside every window
    entry = Entry("m")
    for span, part in _parts(rows, now)[("m", 1)].items():
        entry.add(span, part)
    assert [entry.windows[w].requests for w in ("24h", "7d", "30d")] == [30, 40, 50]
    assert entry.windows["30d"].uptime == 0.76 and entry.recent.requests == 20
    entry.settle(serving=True, incidents=[])
    assert entry.state == "degraded"
    entry.settle(serving=False, incidents=[])
    assert entry.state == "outage"
    other = Incident(title="t", impact="outage", models=["other"], started_at=now)
    mine = Incident(title="t", impact="degraded", models=[], started_at=now)
    quiet = Entry("m")
    quiet.settle(serving=True, incidents=[other])
    assert quiet.state == "operational"
    quiet.settle(serving=True, incidents=[other, mine])
    assert quiet.state == "degraded" and Window().uptime is None
