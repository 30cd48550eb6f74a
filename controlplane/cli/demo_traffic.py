"""Synthetic traffic for the demo seed: a week of requests as usage events, ingested by the real
ingestion path (request logs, charge entries, key spend, rollups) so every page agrees."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from controlplane.extensions import db
from relay import pricing
from relay.context import request_id_at
from relay.usage import UsageEvent

# model → (typical prompt tokens, typical output tokens, latency ms p50, time to first token ms)
PROFILES = {
    "gpt-4o": (1800, 420, 2400, 420), "gpt-4o-mini": (900, 260, 1100, 260), "o3-mini": (1200, 900, 6500, 2100),
    "claude-sonnet-4": (2600, 520, 3100, 650), "claude-haiku-3.5": (700, 200, 900, 240),
    "deepseek-chat": (1500, 380, 2900, 700), "deepseek-reasoner": (1300, 1400, 14000, 5200),
    "llama-3.3-70b": (800, 300, 650, 120), "qwen2.5-72b": (1000, 320, 1800, 380),
}
FAILURES = [(429, "rate_limited", "Rate limit reached for requests"), (502, "upstream_error", "Bad gateway from upstream"),
            (500, "upstream_error", "The server had an error while processing your request"),
            (503, "no_channel_available", None), (400, "invalid_request", "max_tokens is too large")]


@dataclass(frozen=True)
class Customer:
    user_id: int
    account_id: int
    key_ids: tuple[int, ...]
    multiplier_bp: int
    models: tuple[str, ...]
    weight: float


def _spread(rng: random.Random, typical: int) -> int:
    return max(1, int(rng.lognormvariate(math.log(typical), 0.6)))


def _event(rng, started: float, customer: Customer, model: str, routes: dict, prices: dict) -> UsageEvent:
    channel_id, key_id = rng.choice(routes[model])
    prompt, output, latency, ttft = PROFILES.get(model, (1000, 300, 1500, 300))
    stream = rng.random() < 0.55
    failure = rng.choice(FAILURES) if rng.random() < 0.035 else None
    trace = [{"step": "candidates", "channels": sorted({c for c, _ in routes[model]})}]
    event = UsageEvent(request_id=request_id_at(started, rng.getrandbits(48)), started_at=started, finished_at=started,
                       endpoint="/v1/chat/completions", status=200, api_key_id=rng.choice(customer.key_ids), account_id=customer.account_id,
                       user_id=customer.user_id, model=model, upstream_model=model, channel_id=channel_id, channel_key_id=key_id,
                       stream=stream, client_ip=f"203.0.113.{customer.user_id % 250 + 1}", trace=trace)
    if failure is not None:
        status, code, message = failure
        event.status, event.error_code = status, code
        event.latency_ms = rng.randint(40, 900)
        if message:
            trace.append({"step": "attempt", "channel": channel_id, "key": key_id, "status": status, "kind": "transient",
                          "ms": event.latency_ms, "error": message})
        return event
    cached = _spread(rng, prompt // 3) if rng.random() < 0.3 else 0
    event.input_tokens = _spread(rng, prompt)
    event.cache_read_tokens = min(cached, event.input_tokens)
    event.output_tokens = _spread(rng, output)
    event.reasoning_tokens = _spread(rng, output) if model in ("o3-mini", "deepseek-reasoner") else 0
    event.latency_ms = _spread(rng, latency)
    event.ttft_ms = min(_spread(rng, ttft), event.latency_ms) if stream else None
    usage = pricing.Usage(input=event.input_tokens, cache_read=event.cache_read_tokens, output=event.output_tokens,
                          reasoning=event.reasoning_tokens)
    event.cost = pricing.cost(usage, prices[model], customer.multiplier_bp)
    event.finished_at = started + event.latency_ms / 1000
    trace.append({"step": "attempt", "channel": channel_id, "key": key_id, "status": 200, "ms": event.latency_ms})
    return event


def generate(rng: random.Random, now: float, days: int, per_hour: int, customers: list[Customer], routes: dict, prices: dict):
    """Yield events hour by hour with a daily rhythm (busy afternoons UTC, quiet nights)."""
    weights = [c.weight for c in customers]
    for hours_ago in range(days * 24, -1, -1):
        hour_start = now - hours_ago * 3600 - (now % 3600)
        hour_of_day = int(hour_start // 3600) % 24
        rhythm = 0.35 + 0.65 * max(0.0, math.sin(math.pi * (hour_of_day - 5) / 18))
        for _ in range(max(1, int(rng.gauss(per_hour * rhythm, per_hour * 0.15)))):
            started = hour_start + rng.random() * 3600
            if started > now - 5:
                continue
            customer = rng.choices(customers, weights)[0]
            model = rng.choice(customer.models)
            yield _event(rng, started, customer, model, routes, prices)


def recent(rng: random.Random, now: float, count: int, customers: list[Customer], routes: dict, prices: dict):
    """Yield `count` events that finished over the last minute, in the order they finished (the order
    the relay queues them), customers weighted as in `generate` (for benchmarks). Each started its
    latency earlier, which is what its request id says."""
    weights = [c.weight for c in customers]
    for i in range(count):
        customer = rng.choices(customers, weights)[0]
        finished = now - 60 + 55 * i / count
        event = _event(rng, finished, customer, rng.choice(customer.models), routes, prices)
        event.started_at, event.finished_at = finished - (event.latency_ms or 0) / 1000, finished
        event.request_id = request_id_at(event.started_at, rng.getrandbits(48))
        yield event


def ingest(events, batch: int = 500) -> tuple[dict[int, int], int]:
    """Write events through ingestion's batch writer; returns µ$ charged per account, and how many."""
    from workers.usage import write_batch

    charged: dict[int, int] = {}
    pending, count = [], 0
    for event in events:
        count += 1
        pending.append(event)
        charged[event.account_id] = charged.get(event.account_id, 0) + event.cost
        if len(pending) >= batch:
            write_batch(pending)
            db.session.commit()
            pending = []
    if pending:
        write_batch(pending)
        db.session.commit()
    return charged, count
