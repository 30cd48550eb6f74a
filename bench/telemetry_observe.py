"""What the relay's metrics add to a request: `TELEMETRY.observe()` (the one call on the request path)
against calling prometheus-client per request in multiprocess mode, as the relay runs it.

    .venv/bin/python -m bench.telemetry_observe

Prints µs per request for each; the flush's cost (once a second, per label set) is printed too.
"""
from __future__ import annotations

import os
import tempfile
import timeit


def main() -> None:
    directory = tempfile.mkdtemp(prefix="sb-metrics-bench-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from relay.snapshot import Bans, ChannelView, Snapshot
    from relay.telemetry import TELEMETRY, Families
    from relay.usage import UsageEvent

    snap = Snapshot(version=1, groups={}, prices={}, channels=(ChannelView(3, "main", "openai", "http://u", ("gpt-4o-mini",), ()),), bans=Bans())
    trace = [{"step": "candidates", "channels": [3]}, {"step": "pick", "channel": 3, "key": 1},
             {"step": "attempt", "n": 1, "channel": 3, "key": 1, "status": 200, "ms": 300}]
    event = UsageEvent(request_id="req_x", started_at=0.0, finished_at=1.0, endpoint="/v1/chat/completions", status=200, model="gpt-4o-mini",
                       channel_id=3, stream=True, input_tokens=120, output_tokens=300, cost=4_900, latency_ms=1_800, ttft_ms=240, trace=trace)
    n = 200_000
    observe = timeit.timeit(lambda: TELEMETRY.observe(event), number=n) / n * 1e6
    TELEMETRY.flush(snap)
    flush = timeit.timeit(lambda: (TELEMETRY.observe(event), TELEMETRY.flush(snap)), number=2000) / 2000 * 1e6 - observe
    families = TELEMETRY.families or Families()

    def direct() -> None:
        families.requests.labels("gpt-4o-mini", "3", "200").inc()
        families.tokens.labels("gpt-4o-mini", "3", "input").inc(120)
        families.tokens.labels("gpt-4o-mini", "3", "output").inc(300)
        families.cost.labels("gpt-4o-mini", "3").inc(4_900)
        families.latency.labels("gpt-4o-mini", "3").observe(1.8)
        families.ttft.labels("gpt-4o-mini", "3").observe(0.24)

    per_call = timeit.timeit(direct, number=n // 4) / (n // 4) * 1e6
    print(f"observe() on the request path: {observe:.2f} µs/request")
    print(f"flush of one label set (off the path, once a second): {flush:.1f} µs")
    print(f"prometheus-client called per request instead (multiprocess mmap): {per_call:.2f} µs/request")


if __name__ == "__main__":
    main()
