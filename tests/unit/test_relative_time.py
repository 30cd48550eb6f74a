"""Relative times on the consoles: a notice period reads as the period it is, a past moment as the
time that has fully passed."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from controlplane.filters import _relative

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("offset,text", [
    (timedelta(days=7) - timedelta(seconds=1), "in 7 days"),  # a 7-day notice rendered a second after it was set
    (timedelta(days=7), "in 7 days"),
    (timedelta(days=1, hours=13), "in 2 days"),
    (timedelta(hours=2, minutes=40), "in 3 hours"),
    (timedelta(minutes=1), "in 1 min"),
    (timedelta(seconds=20), "just now"),
    (-timedelta(days=6, hours=23), "6 days ago"),  # the past counts only what has fully passed
    (-timedelta(hours=1, minutes=59), "1 hour ago"),
    (-timedelta(minutes=5), "5 min ago"),
])
def test_relative_time(offset, text):
    assert _relative(NOW + offset, NOW) == text
