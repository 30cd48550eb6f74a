"""What one request's admit and settle cost Redis when Redis has a core of its own.

`make bench` runs Redis beside the relay, the load and the fake upstream on two cores, which inflates
every figure of Redis's. Here a private `redis-server` is pinned to the last core and client
processes to the others (or the same one on a 1-core machine); each client runs the relay's own
`Gate` through its lean RESP client, with concurrent requests as gevent greenlets, against many
accounts and keys. Printed: requests/s, Redis process CPU per request, Redis calls per request, and
what `INFO commandstats` saw inside Redis — for each batching configuration asked.

    python -m bench.redis_cost --seconds 10 --concurrency 32 --clients 1 --configs 1x64 32x2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 1_000
EVENT = b'{"request_id":"req_0000000000000000000000","model":"gpt-4o-mini","input_tokens":12,"output_tokens":30}' * 3


def _client(port: int, seconds: float, concurrency: int, batch: int, in_flight: int, seed: int) -> None:
    """One client process (`--client`): prints how many requests it admitted and settled."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import redis

    from relay.admission import Gate, MoneyHold
    from relay.health import Effect, HealthPolicy, Outcome
    from relay.resp import RespPool, Script
    from relay.selector import Plan, Route
    from relay.snapshot import ChannelKeyView, ChannelView, Limits

    pool = RespPool(f"redis://127.0.0.1:{port}/0", size=64)
    gate = Gate(redis.Redis(port=port), HealthPolicy(), lease_seconds=600, register=lambda text: Script(pool, text),
                generation_ttl=3600, batch_size=batch, batch_in_flight=in_flight)
    channel = ChannelView(id=1, name="c1", type="openai", base_url="http://x", models=("m",),
                          keys=tuple(ChannelKeyView(id=10 + i, secret="sk", since=0.0) for i in range(4)), limits=Limits(), key_limits=Limits())
    plans = [Plan((channel,), (Route(channel, k, "m"),)) for k in channel.keys]
    done = [0]
    deadline = time.monotonic() + seconds

    def work(g: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            account = (seed * 7919 + g * 131 + i) % ACCOUNTS + 1
            admission = gate.admit(MoneyHold(f"req_{seed}_{g}_{i}", account, account, 1_000, None, 2e9), (), plans[i % len(plans)])
            gate.settle(admission, 105, EVENT, 42, Outcome(Effect.OK, 1, admission.route.key.id), [2, b"x" * 300, 3600])
            done[0] += 1
            i += 1

    gevent.joinall([gevent.spawn(work, g) for g in range(concurrency)], raise_error=True)
    print(done[0], flush=True)


def measure(seconds: float, concurrency: int, clients: int, batch: int, in_flight: int) -> dict:
    import redis

    from bench.measure import cpu_seconds, free_ports
    from bench.run import pinned
    from relay.redis_keys import account_key

    cores = os.cpu_count() or 1
    redis_core, client_cores = str(cores - 1), (f"0-{cores - 2}" if cores > 1 else "0")
    port = free_ports(1)[0]
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(pinned(redis_core, "redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                         "--dir", folder), stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port)
            for _ in range(100):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            for account in range(1, ACCOUNTS + 1):
                r.hset(account_key(account), "bal", 10**13)
            warm = _run(port, 1.0, concurrency, clients, batch, in_flight, client_cores)
            r.config_resetstat()
            before = cpu_seconds(server.pid)
            requests = _run(port, seconds, concurrency, clients, batch, in_flight, client_cores)
            cpu = cpu_seconds(server.pid) - before
            stats = r.info("commandstats")
        finally:
            server.terminate()
            server.wait()
    calls = sum(s["calls"] for name, s in stats.items() if name == "cmdstat_evalsha")
    inside = {name.removeprefix("cmdstat_"): round(s["usec"] / max(requests, 1), 2) for name, s in stats.items()
              if not name.startswith("cmdstat_config") and not name.startswith("cmdstat_info")}
    return {"batch": batch, "in_flight": in_flight, "warm_up_requests": warm, "requests": requests,
            "requests_per_s": round(requests / seconds), "redis_cpu_us_per_req": round(cpu * 1e6 / max(requests, 1), 1),
            "redis_calls_per_req": round(calls / max(requests, 1), 3),
            "inside_us_per_req": dict(sorted(inside.items(), key=lambda kv: -kv[1]))}


def _run(port: int, seconds: float, concurrency: int, clients: int, batch: int, in_flight: int, cores: str) -> int:
    from bench.run import pinned  # the parent's imports only: a client patches gevent in first

    procs = [subprocess.Popen(pinned(cores, sys.executable, "-m", "bench.redis_cost", "--client", str(port), str(seconds), str(concurrency),
                                     str(batch), str(in_flight), str(n)), stdout=subprocess.PIPE, cwd=ROOT)
             for n in range(clients)]
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            raise RuntimeError(f"a client process failed (exit {p.returncode})")
        total += int(out.split()[-1])
    return total


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, seconds, concurrency, batch, in_flight, seed = sys.argv[2:8]
        _client(int(port), float(seconds), int(concurrency), int(batch), int(in_flight), int(seed))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per client process")
    parser.add_argument("--clients", type=int, default=1, help="client processes (each like one relay process)")
    parser.add_argument("--configs", nargs="+", default=["1x64", "32x2"], help="batch size x calls in flight; 1x64 is unbatched")
    args = parser.parse_args()
    rows = []
    for config in args.configs:
        batch, in_flight = (int(v) for v in config.split("x"))
        rows.append(measure(args.seconds, args.concurrency, args.clients, batch, in_flight))
        row = rows[-1]
        print(f"batch {batch:>2} x {in_flight:>2} in flight: {row['requests_per_s']:>6} req/s, Redis CPU {row['redis_cpu_us_per_req']:>6} µs/req, "
              f"{row['redis_calls_per_req']} calls/req; inside Redis µs/req: "
              + ", ".join(f"{k} {v}" for k, v in list(row["inside_us_per_req"].items())[:6]), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
