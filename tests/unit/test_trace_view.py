"""The decision trace read as a timeline: every step the relay notes, in words, with names."""
from __future__ import annotations

from controlplane.trace_view import TraceStep, describe, timeline

NAMES = {1: "OpenAI primary", 2: "Anthropic"}


def test_a_failover_reads_as_a_story():
    trace = [{"step": "candidates", "channels": [1, 2], "routes": 3, "skipped": [[3, "no_enabled_key"]]},
             {"step": "pick", "channel": 1, "key": 1, "panic": None},
             {"step": "attempt", "n": 0, "channel": 1, "key": 1, "ms": 1200, "status": 503, "kind": "overloaded", "error": "Overloaded"},
             {"step": "health", "channel": 1, "key": 1, "result": "failure", "key_ejected_until": 1_800_000_000},
             {"step": "pick", "channel": 2, "key": 4, "panic": 1},
             {"step": "attempt", "n": 1, "channel": 2, "key": 4, "ms": 640, "status": 200}]
    steps = timeline(trace, NAMES)
    assert steps[0] == TraceStep("Candidates", "2 channels: OpenAI primary, Anthropic · 3 routes (channel and key) in preference order"
                                               " · left out: channel 3 has no enabled key")
    assert steps[1] == TraceStep("Picked OpenAI primary, key #1")
    assert steps[2] == TraceStep("Attempt 1 on OpenAI primary, key #1", "HTTP 503 in 1,200 ms overloaded", "bad", "Overloaded")
    assert steps[3].title == "Health of OpenAI primary: failure" and steps[3].detail == "key ejected until 08:00:00 UTC"
    assert steps[4].tone == "warn" and "panic mode" in steps[4].detail
    assert steps[5] == TraceStep("Attempt 2 on Anthropic, key #4", "HTTP 200 in 640 ms", "ok")


def test_no_step_reads_as_raw_fields():
    for step in ({"step": "stop", "why": "retry budget exhausted"}, {"step": "limit", "scope": "key:4", "which": "rpm", "retry_after": 3},
                 {"step": "output_cap", "tokens": 4096, "reserved": 105}, {"step": "route", "result": "no usable route", "panic": None},
                 {"step": "stream", "result": "client disconnected"}, {"step": "charge_cut", "cost": 20, "charged": 10},
                 {"step": "skip", "channel": 2, "key": 5, "why": "ejected"}):
        shown = describe(step, NAMES)
        assert "=" not in shown.title + shown.detail and "None" not in shown.title + shown.detail, shown
    assert describe({"step": "output_cap", "tokens": 4096, "reserved": 105}, NAMES).detail == "at 4,096 tokens, what the $0.000105 hold pays for"


def test_an_unknown_step_still_shows_its_fields():
    assert describe({"step": "new_thing", "level": 3, "extra": None}, NAMES) == TraceStep("New thing", "level 3")
    assert describe("free text", NAMES) == TraceStep("free text")


def test_affinity_and_the_capacity_queue_read_in_words():
    kept = describe({"step": "affinity", "result": "kept", "via": "prefix"}, NAMES)
    assert kept.title == "Prompt-cache affinity" and "stayed on the channel key" in kept.detail and "opening" in kept.detail
    assert "caller's user" in describe({"step": "affinity", "result": "moved", "via": "user"}, NAMES).detail
    served = describe({"step": "queue", "position": 3, "expected_s": 1, "limit_s": 10, "result": "served", "waited_ms": 1250}, NAMES)
    assert served == TraceStep("Waited for capacity", "1,250 ms in the queue, then served", "warn")
    overflow = describe({"step": "queue", "position": 9, "limit_s": 1, "result": "overflow", "waited_ms": 1000, "retry_after": 4}, NAMES)
    assert overflow.tone == "bad" and "retry after 4 s" in overflow.detail
