"""The relay's metrics: what one observation per request becomes once flushed, with labels bounded
by the snapshot, and buckets written exactly as prometheus-client's own `observe()` would."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from relay import telemetry
from relay.snapshot import Bans, ChannelView, Snapshot
from relay.telemetry import Families, Telemetry
from relay.usage import UsageEvent


def snapshot(version: int = 7) -> Snapshot:
    channel = ChannelView(id=3, name="main", type="openai", base_url="http://upstream", models=("gpt-4o-mini",), keys=(),
                          model_map={"fast": "gpt-4o-mini"})
    return Snapshot(version=version, groups={}, prices={}, channels=(channel,), bans=Bans(), built_at=1_700_000_000.0)


def event(model: str | None = "gpt-4o-mini", channel: int | None = 3, status: int = 200, **fields) -> UsageEvent:
    values = dict(request_id="req_1", started_at=0.0, finished_at=1.0, endpoint="/v1/chat/completions", status=status, model=model,
                  channel_id=channel, input_tokens=12, output_tokens=5, cost=111, latency_ms=420, ttft_ms=None)
    values.update(fields)
    return UsageEvent(**values)


def fresh() -> tuple[Telemetry, CollectorRegistry]:
    registry = CollectorRegistry()
    recorder = Telemetry()
    recorder.families = Families(registry)
    return recorder, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_one_observation_per_request_becomes_requests_tokens_cost_and_latency():
    recorder, registry = fresh()
    recorder.observe(event())
    recorder.observe(event(stream=True, ttft_ms=80, latency_ms=3000, output_tokens=7, cost=140))
    recorder.observe(event(status=429, input_tokens=0, output_tokens=0, cost=0, latency_ms=3))
    recorder.flush(snapshot())
    route = {"model": "gpt-4o-mini", "channel": "3"}
    assert sample(registry, "switchboard_relay_requests_total", status="200", **route) == 2
    assert sample(registry, "switchboard_relay_requests_total", status="429", **route) == 1
    assert sample(registry, "switchboard_relay_tokens_total", kind="input", **route) == 24
    assert sample(registry, "switchboard_relay_tokens_total", kind="output", **route) == 12
    assert sample(registry, "switchboard_relay_tokens_total", kind="reasoning", **route) is None  # nothing, no series
    assert sample(registry, "switchboard_relay_cost_micro_usd_total", **route) == 251
    assert sample(registry, "switchboard_relay_request_duration_seconds_count", **route) == 3
    assert sample(registry, "switchboard_relay_request_duration_seconds_bucket", le="0.05", **route) == 1
    assert sample(registry, "switchboard_relay_request_duration_seconds_bucket", le="0.5", **route) == 2
    assert sample(registry, "switchboard_relay_request_duration_seconds_bucket", le="5.0", **route) == 3
    assert sample(registry, "switchboard_relay_request_duration_seconds_sum", **route) == 3.423
    assert sample(registry, "switchboard_relay_time_to_first_token_seconds_count", **route) == 1
    assert sample(registry, "switchboard_relay_time_to_first_token_seconds_bucket", le="0.1", **route) == 1
    assert sample(registry, "switchboard_relay_snapshot_version") == 7
    # flushing again adds nothing that was not observed again
    recorder.flush(snapshot())
    assert sample(registry, "switchboard_relay_requests_total", status="200", **route) == 2


def test_models_and_channels_the_snapshot_does_not_configure_are_other():
    recorder, registry = fresh()
    recorder.observe(event(model="fast"))  # a public alias the channel maps
    recorder.observe(event(model="made-up-1"))
    recorder.observe(event(model="made-up-2", channel=99))
    recorder.observe(event(model=None, channel=None, status=401))
    recorder.flush(snapshot())
    assert sample(registry, "switchboard_relay_requests_total", model="fast", channel="3", status="200") == 1
    assert sample(registry, "switchboard_relay_requests_total", model="other", channel="3", status="200") == 1
    assert sample(registry, "switchboard_relay_requests_total", model="other", channel="other", status="200") == 1
    assert sample(registry, "switchboard_relay_requests_total", model="none", channel="none", status="401") == 1
    models = {s.labels["model"] for m in registry.collect() for s in m.samples if "model" in s.labels}
    assert models == {"fast", "other", "none"}


def test_the_buffer_between_flushes_is_bounded(monkeypatch):
    monkeypatch.setattr(telemetry, "MAX_CELLS", 10)
    recorder, registry = fresh()
    for i in range(1000):
        recorder.observe(event(model=f"spam-{i}"))
    assert len(recorder.cells) <= 11
    recorder.flush(snapshot())
    assert sample(registry, "switchboard_relay_requests_total", model="other", channel="3", status="200") == 1000


def test_retries_and_ejections_come_from_the_trace():
    recorder, registry = fresh()
    trace = [{"step": "pick", "channel": 3}, {"step": "attempt", "n": 1, "channel": 3, "status": 500},
             {"step": "health", "channel": 3, "key": 1, "result": "failure", "key_ejected_until": 5.0},
             {"step": "attempt", "n": 2, "channel": 3, "status": 500},
             {"step": "health", "channel": 3, "key": 2, "result": "failure"},
             {"step": "attempt", "n": 3, "channel": 3, "status": 200}]
    recorder.observe(event(trace=trace))
    recorder.observe(event(trace=[{"step": "attempt", "n": 1, "channel": 3, "status": 200}]))
    recorder.flush(snapshot())
    assert sample(registry, "switchboard_relay_retries_total", model="gpt-4o-mini", channel="3") == 2
    assert sample(registry, "switchboard_relay_ejections_total", channel="3") == 1


def test_flushed_buckets_read_exactly_as_observe_would_have_written_them():
    """The flush adds bucket counts through prometheus-client's histogram internals; a library change
    there must fail here, not silently skew latency."""
    recorder, registry = fresh()
    reference = CollectorRegistry()
    direct = Histogram("switchboard_relay_request_duration_seconds", "Request duration, start to settle", ["model", "channel"],
                       buckets=[ms / 1000 for ms in telemetry.LATENCY_MS], registry=reference)
    for ms in (0, 1, 50, 51, 100, 999, 1000, 4_000, 299_999, 300_000, 300_001, 10_000_000):
        recorder.observe(event(latency_ms=ms))
        direct.labels("gpt-4o-mini", "3").observe(ms / 1000)
    recorder.flush(snapshot())

    def lines(text: bytes) -> list[bytes]:
        return [line for line in text.splitlines() if line.startswith(b"switchboard_relay_request_duration_seconds_")
                and b"_created" not in line]

    ours, theirs = lines(generate_latest(registry)), lines(generate_latest(reference))
    assert [line for line in ours if b"_sum" not in line] == [line for line in theirs if b"_sum" not in line]
    # the sum is added up in whole milliseconds here: exact, where adding floats one by one is not
    route = {"model": "gpt-4o-mini", "channel": "3"}
    assert abs(sample(registry, "switchboard_relay_request_duration_seconds_sum", **route)
               - sample(reference, "switchboard_relay_request_duration_seconds_sum", **route)) < 1e-6
