"""A week of realistic traffic for a user of a running gateway, so the screenshots show the console
as a customer with history sees it. Events go through the real path after the relay: the Redis
usage stream (the worker ingests them into request logs, charges and rollups), with the live
balance and key spend moved in Redis exactly as the relay's settle would."""
from __future__ import annotations

import random
import time
import uuid

import redis

from relay.pricing import Price, Usage, cost
from relay.quota import account_key, api_key_key, key_day_key, key_month_key, member_month_key
from relay.usage import USAGE_STREAMS, UsageEvent

PRICES = {
    "gpt-4o-mini": Price("gpt-4o-mini", input=150_000, output=600_000, cache_read=75_000),
    "gpt-4o": Price("gpt-4o", input=2_500_000, output=10_000_000, cache_read=1_250_000),
    "o3-mini": Price("o3-mini", input=1_100_000, output=4_400_000, cache_read=550_000),
}


def gateway_redis(gateway) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(gateway.instance / "redis" / "redis.sock"))


def _event(rng: random.Random, started: float, key_id: int, account_id: int, user_id: int) -> UsageEvent:
    model = rng.choices(list(PRICES), weights=[6, 3, 1])[0]
    failed = rng.random() < 0.03
    usage = Usage(input=rng.randint(1_500, 40_000), cache_read=rng.choice([0, 0, 4_096, 16_384]), output=rng.randint(150, 2_500),
                  reasoning=rng.randint(500, 6_000) if model == "o3-mini" else 0)
    if failed:
        usage = Usage()
    latency = int(rng.lognormvariate(6.6, 0.5)) + (2_000 if model == "o3-mini" else 0)
    return UsageEvent(request_id="req_" + uuid.UUID(int=rng.getrandbits(128)).hex[:24], started_at=started,
                      finished_at=started + latency / 1000, endpoint="/v1/chat/completions", status=502 if failed else 200,
                      api_key_id=key_id, account_id=account_id, user_id=user_id, model=model, channel_id=1, stream=rng.random() < 0.6,
                      error_code="upstream_error" if failed else None, input_tokens=usage.input, cache_read_tokens=usage.cache_read,
                      output_tokens=usage.output, reasoning_tokens=usage.reasoning, cost=0 if failed else cost(usage, PRICES[model]),
                      latency_ms=latency, ttft_ms=min(latency, int(rng.uniform(150, 700))), client_ip="203.0.113.7")


def seed_week(gateway, account_id: int, user_id: int, key_ids: list[int], seed: int = 7) -> int:
    """Queue a week of requests on the keys; returns the µ$ charged."""
    rng = random.Random(seed)
    r = gateway_redis(gateway)
    now = time.time()
    pipe = r.pipeline(transaction=False)
    total, per_key, windows = 0, {k: 0 for k in key_ids}, {}
    for hour in range(7 * 24, 0, -1):
        start = now - hour * 3600
        busy = 5 if 8 <= time.gmtime(start).tm_hour <= 18 else 1  # office hours
        for _ in range(rng.randint(0, busy)):
            key_id = rng.choices(key_ids, weights=[5, 2, 1][:len(key_ids)])[0]
            e = _event(rng, start + rng.uniform(0, 3_000), key_id, account_id, user_id)
            pipe.xadd(USAGE_STREAMS[0], {"e": e.encode()})
            total += e.cost
            per_key[key_id] += e.cost
            for name in (key_day_key(account_id, key_id, e.started_at), key_month_key(account_id, key_id, e.started_at),
                         member_month_key(account_id, user_id, e.started_at)):
                windows[name] = windows.get(name, 0) + e.cost
    pipe.hincrby(account_key(account_id), "bal", -total)
    for key_id, spent in per_key.items():
        pipe.hincrby(api_key_key(account_id, key_id), "spent", spent)
    for name, spent in windows.items():
        pipe.hincrby(name, "spent", spent)
        pipe.expire(name, 40 * 86_400)
    pipe.execute()
    return total


def wait_for_ingestion(gateway, timeout: float = 30) -> None:
    r = gateway_redis(gateway)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if r.xlen(USAGE_STREAMS[0]) == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the worker did not ingest the seeded usage")
