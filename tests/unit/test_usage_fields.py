"""The bounds a usage event meets before SQL: text cut to its column, numbers that fit, a short trace."""
from __future__ import annotations

import pytest

from relay.usage import UsageEvent
from workers import usage_fields
from workers.usage_fields import InvalidEvent, check, parse


def _event(**fields) -> UsageEvent:
    return UsageEvent(**({"request_id": "req_1", "started_at": 1.7e9, "finished_at": 1.7e9 + 1, "endpoint": "/v1/chat/completions",
                          "status": 200} | fields))


def test_text_is_cut_to_the_length_of_its_column():
    event = check(_event(model="m" * 300, upstream_model="u" * 300, error_code="e" * 100, client_ip="1" * 100, endpoint="/" * 100))
    assert usage_fields.TEXT_LIMITS == {"model": 200, "upstream_model": 200, "endpoint": 64, "error_code": 64, "usage_source": 16,
                                        "client_ip": 64}
    assert (len(event.model), len(event.upstream_model), len(event.error_code), len(event.client_ip), len(event.endpoint)) == (200, 200, 64, 64, 64)


@pytest.mark.parametrize("fields,message", [
    ({"request_id": "r" * 41}, "request_id must be 1..40"),
    ({"request_id": ""}, "request_id must be 1..40"),
    ({"output_tokens": 2**31}, "output_tokens 2147483648 is outside"),
    ({"cost": -1}, "cost -1 is outside"),
    ({"cost": 1.5}, "cost must be an integer"),
    ({"account_id": True}, "account_id must be an integer"),
    ({"model": 42}, "model must be text"),
    ({"started_at": float("nan")}, "started_at must be a Unix time"),
    ({"finished_at": 1e300}, "finished_at must be a Unix time"),
    ({"stream": "yes"}, "stream must be true or false"),
    ({"trace": {"step": "pick"}}, "trace must be a list"),
])
def test_what_no_column_can_hold_is_refused(fields, message):
    with pytest.raises(InvalidEvent, match=message):
        check(_event(**fields))


def test_money_fits_in_64_bits():
    assert check(_event(cost=2**40, held=2**40)).cost == 2**40


def test_a_long_trace_keeps_its_first_steps_and_says_how_many_were_left_out():
    steps = [{"step": "attempt", "channel": i, "error": "x" * 500} for i in range(100)]
    trace = check(_event(trace=steps)).trace
    assert trace[0] == steps[0] and trace[-1] == {"step": "truncated", "left_out": 100 - (len(trace) - 1)}
    assert len(trace) <= usage_fields.TRACE_ENTRIES + 1
    short = [{"step": "pick", "channel": 1}]
    assert check(_event(trace=short)).trace is short


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'{"request_id": "req_1"}', b'{"request_id": "req_1", "charged": "x"}'])
def test_an_unreadable_event_is_refused(raw):
    with pytest.raises(InvalidEvent, match="unreadable event"):
        parse({b"e": raw})
