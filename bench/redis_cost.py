"""What one request's admit and settle cost Redis when Redis has a core of its own.

`make bench` runs Redis beside the relay, the load and the fake upstream on two cores, which inflates
every figure of Redis's. Here a private `redis-server` is pinned to the last core and client
processes to the others (or the same one on a 1-core machine); each client runs the relay's own
`Gate` through its lean RESP client, with concurrent requests as gevent greenlets, against many
accounts and keys. Printed: requests/s, Redis process CPU per request, Redis calls per request, and
what `INFO commandstats` saw inside Redis — for each batching configuration asked.

    python -m bench.redis_cost --seconds 10 --concurrency 32 --clients 1 --configs 1x64 32x2 [--cluster]

`--cluster` runs the same against a 3-master Redis Cluster (all three on the Redis core), the
clients naming keys as relays on a cluster do, and prints each master's share.
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
CHANNELS = 8
EVENT = b'{"request_id":"req_0000000000000000000000","model":"gpt-4o-mini","input_tokens":12,"output_tokens":30}' * 3


def _client(url: str, seconds: float, concurrency: int, batch: int, in_flight: int, seed: int, channels: int = CHANNELS) -> None:
    """One client process (`--client`): prints how many requests it admitted and settled. Its
    REDIS_URL is `url`, so that under a cluster it names keys as a relay there does. Requests go to
    `channels` channels of 4 keys each in turn (a deployment's models and their channels)."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    from relay.admission import Gate, MoneyHold
    from relay.capacity_queue import spot_for
    from relay.health import Effect, HealthPolicy, Outcome
    from relay.redis_connect import redis_py_client
    from relay.resp import Script, connect_pool
    from relay.selector import Plan, Route
    from relay.snapshot import ChannelKeyView, ChannelView, Limits

    pool = connect_pool(url, size=64)
    gate = Gate(redis_py_client(url), HealthPolicy(), lease_seconds=600, register=lambda text: Script(pool, text),
                generation_ttl=3600, batch_size=batch, batch_in_flight=in_flight)
    views = [ChannelView(id=c, name=f"c{c}", type="openai", base_url="http://x", models=("m",),
                         keys=tuple(ChannelKeyView(id=10 * c + i, secret="sk", since=0.0) for i in range(4)), limits=Limits(), key_limits=Limits())
             for c in range(1, channels + 1)]
    plans = [Plan((c,), (Route(c, c.keys[i], "m"),)) for i in range(4) for c in views]
    # `--queue`: each model's group queues for capacity (the product's default), as the relay asks then.
    spots = [spot_for("m", plan.channels) if os.environ.get("BENCH_QUEUE") else None for plan in plans]
    done = [0]
    deadline = time.monotonic() + seconds

    def work(g: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            account = (seed * 7919 + g * 131 + i) % ACCOUNTS + 1
            n = i % len(plans)
            admission = gate.admit(MoneyHold(f"req_{seed}_{g}_{i}", account, account, 1_000, None, 2e9), (), plans[n], queue=spots[n])
            route = admission.route
            gate.settle(admission, 105, EVENT, 42, Outcome(Effect.OK, route.channel.id, route.key.id), [2, b"x" * 300, 3600])
            done[0] += 1
            i += 1

    gevent.joinall([gevent.spawn(work, g) for g in range(concurrency)], raise_error=True)
    print(done[0], flush=True)


def _seed(url: str) -> None:
    """`--seed`: every account funded, in the names of this process's REDIS_URL (`url`)."""
    from relay.redis_connect import redis_py_client
    from relay.redis_keys import account_key

    client = redis_py_client(url)
    pipe = client.pipeline(transaction=False)
    for account in range(1, ACCOUNTS + 1):
        pipe.hset(account_key(account), "bal", 10**13)
    pipe.execute()


class _Servers:
    """A private redis-server pinned to `core`, or with `cluster` a 3-master Redis Cluster of them."""

    def __init__(self, folder: str, core: str, cluster: bool, masters: int = 3):
        from bench.measure import cluster_ports, free_ports
        from bench.run import pinned

        self.procs: list[subprocess.Popen] = []
        self.ports = cluster_ports(masters) if cluster else free_ports(1)
        extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"] if cluster else []
        for n, port in enumerate(self.ports):
            node = os.path.join(folder, f"node{n}")
            os.makedirs(node)
            self.procs.append(subprocess.Popen(pinned(core, "redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                                      "--dir", node, *extra), stdout=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda port=port: self.client(port).ping())
        if cluster and masters == 1:
            # `redis-cli --cluster create` wants three masters; one node takes every slot itself.
            self.client(self.ports[0]).execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            self._wait(lambda: b"cluster_state:ok" in self.client(self.ports[0]).execute_command("CLUSTER", "INFO"))
        elif cluster:
            subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0",
                            "--cluster-yes"], check=True, capture_output=True, timeout=60)
            self._wait(lambda: all(b"cluster_state:ok" in self.client(p).execute_command("CLUSTER", "INFO") for p in self.ports))
        self.url = ("redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)) if cluster else f"redis://127.0.0.1:{self.ports[0]}/0"

    @staticmethod
    def client(port: int):
        import redis

        return redis.Redis(port=port)

    @staticmethod
    def _wait(check) -> None:
        import redis

        for _ in range(400):
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not come up")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait()


def measure(seconds: float, concurrency: int, clients: int, batch: int, in_flight: int, cluster: bool = False, masters: int = 3,
            channels: int = CHANNELS) -> dict:
    from bench.measure import cpu_seconds

    cores = os.cpu_count() or 1
    redis_core, client_cores = str(cores - 1), (f"0-{cores - 2}" if cores > 1 else "0")
    with tempfile.TemporaryDirectory() as folder:
        servers = _Servers(folder, redis_core, cluster, masters)
        try:
            env = {**os.environ, "REDIS_URL": servers.url}
            subprocess.run([sys.executable, "-m", "bench.redis_cost", "--seed", servers.url], cwd=ROOT, env=env, check=True)
            warm = _run(servers.url, 1.0, concurrency, clients, batch, in_flight, client_cores, channels)
            for port in servers.ports:
                servers.client(port).config_resetstat()
            before = [cpu_seconds(p.pid) for p in servers.procs]
            requests = _run(servers.url, seconds, concurrency, clients, batch, in_flight, client_cores, channels)
            cpu = [cpu_seconds(p.pid) - b for p, b in zip(servers.procs, before, strict=True)]
            stats: dict[str, dict] = {}
            by_node: list[dict] = []
            for port in servers.ports:
                node_stats = servers.client(port).info("commandstats")
                evalsha = node_stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
                by_node.append({"evalsha_calls": evalsha["calls"], "evalsha_usec": evalsha["usec"],
                                "commands_usec": sum(v["usec"] for k, v in node_stats.items() if k != "cmdstat_evalsha")})
                for name, s in node_stats.items():
                    total = stats.setdefault(name, {"calls": 0, "usec": 0})
                    total["calls"] += s["calls"]
                    total["usec"] += s["usec"]
        finally:
            servers.stop()
    calls = sum(s["calls"] for name, s in stats.items() if name == "cmdstat_evalsha")
    inside = {name.removeprefix("cmdstat_"): round(s["usec"] / max(requests, 1), 2) for name, s in stats.items()
              if not name.startswith("cmdstat_config") and not name.startswith("cmdstat_info") and not name.startswith("cmdstat_cluster")}
    return {"batch": batch, "in_flight": in_flight, "cluster": cluster, "masters": len(servers.ports), "channels": channels,
            "warm_up_requests": warm, "requests": requests,
            "requests_per_s": round(requests / seconds), "redis_cpu_us_per_req": round(sum(cpu) * 1e6 / max(requests, 1), 1),
            "redis_cpu_us_per_req_by_node": [round(c * 1e6 / max(requests, 1), 1) for c in cpu],
            "redis_calls_per_req": round(calls / max(requests, 1), 3),
            # Per master: script calls per request, and µs per request inside them (Lua and the commands
            # it runs; the rest of the master's CPU is reading, parsing and answering).
            "calls_per_req_by_node": [round(n["evalsha_calls"] / max(requests, 1), 3) for n in by_node],
            "evalsha_us_per_req_by_node": [round(n["evalsha_usec"] / max(requests, 1), 1) for n in by_node],
            "inside_us_per_req": dict(sorted(inside.items(), key=lambda kv: -kv[1]))}


def _run(url: str, seconds: float, concurrency: int, clients: int, batch: int, in_flight: int, cores: str, channels: int = CHANNELS) -> int:
    from bench.run import pinned  # the parent's imports only: a client patches gevent in first

    env = {**os.environ, "REDIS_URL": url}
    procs = [subprocess.Popen(pinned(cores, sys.executable, "-m", "bench.redis_cost", "--client", url, str(seconds), str(concurrency),
                                     str(batch), str(in_flight), str(n), str(channels)), stdout=subprocess.PIPE, cwd=ROOT, env=env)
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
        url, seconds, concurrency, batch, in_flight, seed = sys.argv[2:8]
        _client(url, float(seconds), int(concurrency), int(batch), int(in_flight), int(seed), int(sys.argv[8]) if len(sys.argv) > 8 else CHANNELS)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--seed":
        _seed(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per client process")
    parser.add_argument("--clients", type=int, default=1, help="client processes (each like one relay process)")
    parser.add_argument("--configs", nargs="+", default=["1x64", "32x2"], help="batch size x calls in flight; 1x64 is unbatched")
    parser.add_argument("--cluster", action="store_true", help="a Redis Cluster (all its masters on the Redis core) instead of one server")
    parser.add_argument("--masters", type=int, default=3, choices=(1, 3, 6),
                        help="the cluster's masters: 1 (every slot on one node) isolates what the layout costs from processes sharing a core")
    parser.add_argument("--channels", type=int, default=CHANNELS, help="channels the requests go to in turn (one model each)")
    parser.add_argument("--queue", action="store_true", help="the groups queue for capacity (the default of groups; off: the figures above)")
    args = parser.parse_args()
    if args.queue:
        os.environ["BENCH_QUEUE"] = "1"  # the client processes inherit it
    rows = []
    for config in args.configs:
        batch, in_flight = (int(v) for v in config.split("x"))
        rows.append(measure(args.seconds, args.concurrency, args.clients, batch, in_flight, args.cluster, args.masters, args.channels))
        row = rows[-1]
        print(f"batch {batch:>2} x {in_flight:>2} in flight: {row['requests_per_s']:>6} req/s, Redis CPU {row['redis_cpu_us_per_req']:>6} µs/req, "
              f"{row['redis_calls_per_req']} calls/req; inside Redis µs/req: "
              + ", ".join(f"{k} {v}" for k, v in list(row["inside_us_per_req"].items())[:6])
              + (f"; by node µs/req: {row['redis_cpu_us_per_req_by_node']}, inside scripts {row['evalsha_us_per_req_by_node']}, "
                 f"calls/req {row['calls_per_req_by_node']}" if args.cluster else ""), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
