"""`make bench-scale`: how writes and the relay behave with many customers, on PostgreSQL.

Creates a fresh PostgreSQL database and an embedded Redis, bulk-creates `--keys` keys for `--users`
customers (`switchboard demo seed --keys`'s code), starts one `switchboard relay` process against a
fake upstream, and measures:

- an operator or customer write (create a key, disable/enable it, ban/lift, disable a user): p50;
- a new key usable at the relay: from the start of the write to the relay's first 200;
- a disable and a ban effective at a relay that had the key cached;
- relay RSS, idle and with its key cache warmed by `--warm` distinct keys; Redis memory per key;
- request latency while routing config is republished every 0.2 s, against a quiet baseline;
- relay CPU per request on a key-cache hit and on a miss.

Prints one table (and the extrapolation to 1,000,000 keys where a figure grows with keys). Not a
test: it measures. Bounded: the default size takes a few minutes on a shared two-core machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import requests

from bench.measure import cpu_seconds, rss_kb, wait_http
from controlplane.services.base import Actor

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
UPSTREAM_PORT, RELAY_PORT = 18531, 18533
ACTOR = Actor(name="bench scale")


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Scale:
    def __init__(self, admin_url: str):
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-scale-"))
        self.admin_url = admin_url
        self.dbname = f"switchboard_scale_{os.getpid()}"
        self.procs: list[subprocess.Popen] = []
        self.http = requests.Session()

    # --- setup -----------------------------------------------------------------------------------
    def start(self) -> None:
        from controlplane.embedded_redis import EmbeddedRedis

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        base = self.admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        self.redis_server = EmbeddedRedis(self.dir)
        os.environ.update(DATABASE_URL=f"{base}/{self.dbname}", REDIS_URL=self.redis_server.acquire(), SWITCHBOARD_INSTANCE=str(self.dir),
                          SWITCHBOARD_LOG_LEVEL="WARNING",
                          # the fake upstream listens on loopback, which the egress guard admits only when asked
                          SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8", SWITCHBOARD_HTTP_MAX_CONNECTIONS_PER_IP="0")
        subprocess.run([PY, "-m", "controlplane", "db", "upgrade"], cwd=ROOT, capture_output=True, check=True)
        self.spawn([PY, "-m", "bench.fake_upstream", str(UPSTREAM_PORT)])
        wait_http(f"http://127.0.0.1:{UPSTREAM_PORT}/v1/models")
        from controlplane.app import create_app

        self.app = create_app()
        self.ctx = self.app.app_context()
        self.ctx.push()
        from controlplane.services import channels, prices

        self.channel = channels.add_channel(ACTOR, name="bench", type="openai", base_url=f"http://127.0.0.1:{UPSTREAM_PORT}/v1",
                                            keys=["sk-bench"], models=["bench-model"])
        prices.set_price(ACTOR, "bench-model", input="1", output="2", enforce_notice=False)

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        with open(self.dir / f"{len(self.procs)}.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_relay(self) -> None:
        self.relay = self.spawn([PY, "-m", "controlplane", "relay", "--host", "127.0.0.1", "--port", str(RELAY_PORT), "--workers", "1"])
        wait_http(f"http://127.0.0.1:{RELAY_PORT}/healthz")
        self.url = f"http://127.0.0.1:{RELAY_PORT}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.ctx.pop()
        from controlplane.extensions import db

        with self.app.app_context():
            db.engine.dispose()
        self.redis_server.release()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    # --- calls -------------------------------------------------------------------------------------
    def chat(self, secret: str) -> int:
        body = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        return self.http.post(self.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30).status_code

    def until(self, secret: str, status: int, timeout: float = 10.0) -> float:
        started = time.perf_counter()
        while self.chat(secret) != status:
            if time.perf_counter() - started > timeout:
                return float("inf")
        return time.perf_counter() - started

    def models(self, secret: str) -> int:
        return self.http.get(self.url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=30).status_code


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def writes(scale: Scale, rounds: int) -> dict:
    from controlplane.models import KeyStatus
    from controlplane.services import bans, billing, keys, users

    user = users.create_user(ACTOR, "bench-writes@example.test")
    billing.topup(ACTOR, user.account, "1000", "benchmark")
    found: dict[str, list[float]] = {"create key": [], "disable key": [], "enable key": [], "ban key": [], "lift ban": [], "disable user": [],
                                     "enable user": []}
    usable, disabled, banned = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        key, secret = keys.create_key(ACTOR, user, "bench")
        found["create key"].append(time.perf_counter() - started)
        scale.until(secret, 200)
        usable.append(time.perf_counter() - started)
        started = time.perf_counter()
        found["disable key"].append(timed(lambda: keys.set_key_status(ACTOR, key, KeyStatus.DISABLED)))  # noqa: B023
        scale.until(secret, 401)
        disabled.append(time.perf_counter() - started)
        found["enable key"].append(timed(lambda: keys.set_key_status(ACTOR, key, KeyStatus.ENABLED)))  # noqa: B023
        scale.until(secret, 200)
        started = time.perf_counter()
        row = bans.ban(ACTOR, "key", str(key.id), "bench")
        found["ban key"].append(time.perf_counter() - started)
        scale.until(secret, 403)
        banned.append(time.perf_counter() - started)
        found["lift ban"].append(timed(lambda: bans.lift(ACTOR, row)))  # noqa: B023
        found["disable user"].append(timed(lambda: users.set_active(ACTOR, user, False)))
        found["enable user"].append(timed(lambda: users.set_active(ACTOR, user, True)))
    return {"writes_ms": {k: round(p50(v) * 1000, 1) for k, v in found.items()},
            "new_key_usable_ms": (round(p50(usable) * 1000, 1), round(max(usable) * 1000, 1)),
            "disable_effective_ms": (round(p50(disabled) * 1000, 1), round(max(disabled) * 1000, 1)),
            "ban_effective_ms": (round(p50(banned) * 1000, 1), round(max(banned) * 1000, 1))}


def latency_during_changes(scale: Scale, secret: str, seconds: float) -> dict:
    """Sequential requests for `seconds` quietly, then for `seconds` while another process changes a
    channel's weight (a real routing change, published each time) every 0.2 s."""

    def load(until: float) -> list[float]:
        found = []
        while time.perf_counter() < until:
            found.append(timed(lambda: scale.chat(secret)))
        return found

    quiet = load(time.perf_counter() + seconds)
    changer = subprocess.Popen([PY, "-m", "bench.scale", "--change-channel", str(scale.channel.id), "--seconds", str(seconds + 3)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    time.sleep(3)  # its imports; then it changes the channel for `seconds`
    busy = load(time.perf_counter() + seconds)
    out, _ = changer.communicate(timeout=120)
    publishes, publish_ms = (float(x) for x in out.split())
    def ms(v: float) -> float:
        return round(v * 1000, 2)

    return {"quiet_ms": (ms(p50(quiet)), ms(pct(quiet, 0.99)), ms(max(quiet))), "changing_ms": (ms(p50(busy)), ms(pct(busy, 0.99)), ms(max(busy))),
            "publishes": int(publishes), "publish_ms": round(publish_ms, 2)}


def change_channel(channel_id: int, seconds: float) -> None:
    """The other process of `latency_during_changes`: prints how many publishes and their p50 (ms)."""
    from controlplane.app import create_app
    from controlplane.services import channels

    with create_app().app_context():
        weight, published = 1, []
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            weight = 3 - weight
            channel = channels.channel_by_id(channel_id)
            published.append(timed(lambda: channels.update_channel(ACTOR, channel, weight=weight)))  # noqa: B023
            time.sleep(0.2)
    print(len(published), p50(published) * 1000)


def cpu_per_request(scale: Scale, hot: str, cold: list[str]) -> dict:
    pid = scale.relay.pid
    scale.chat(hot)
    before = cpu_seconds(pid)
    for _ in range(len(cold)):
        scale.chat(hot)
    hit = (cpu_seconds(pid) - before) / len(cold)
    before = cpu_seconds(pid)
    for secret in cold:
        scale.chat(secret)
    miss = (cpu_seconds(pid) - before) / len(cold)
    health = scale.http.get(scale.url + "/healthz").json()
    return {"hit_us": round(hit * 1e6), "miss_us": round(miss * 1e6), "cache": health["key_cache"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--warm", type=int, default=20_000, help="distinct keys sent to the relay to fill its cache")
    parser.add_argument("--rounds", type=int, default=20, help="writes of each kind timed")
    parser.add_argument("--seconds", type=float, default=5.0, help="per latency phase")
    parser.add_argument("--change-channel", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--postgres", default=os.environ.get("SWITCHBOARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    if args.change_channel:
        change_channel(args.change_channel, args.seconds)
        return

    scale = Scale(args.postgres)
    scale.start()
    try:
        from controlplane import bulk_customers
        from controlplane.runtime import runtime

        redis = runtime().redis
        before_mem = int(redis.info("memory")["used_memory"])
        sample = args.warm + 2_000
        seeded = bulk_customers.create(redis, args.users, args.keys, sample=sample, rng_seed=7)
        per_key = (int(redis.info("memory")["used_memory"]) - before_mem) / max(1, seeded.keys)
        from controlplane.snapshot import publish

        started = time.perf_counter()
        publish()
        publish_ms = (time.perf_counter() - started) * 1000
        scale.start_relay()
        rss_idle = rss_kb(scale.relay.pid)
        warm, cold = seeded.sample[:args.warm], seeded.sample[args.warm:]
        for secret in warm:
            scale.models(secret)
        rss_warm = rss_kb(scale.relay.pid)
        report = {"keys": seeded.keys, "users": seeded.users, "seed_s": round(seeded.seconds, 1), "publish_ms": round(publish_ms, 1),
                  "redis_bytes_per_key": round(per_key), "rss_idle_mb": round(rss_idle / 1024, 1), "rss_warm_mb": round(rss_warm / 1024, 1),
                  "warm_keys": len(warm)}
        report.update(writes(scale, args.rounds))
        report["latency"] = latency_during_changes(scale, warm[0], args.seconds)
        report["cpu"] = cpu_per_request(scale, warm[0], cold)
        print(table(report))
    finally:
        scale.stop()


def table(r: dict) -> str:
    million = 1_000_000 / max(1, r["keys"])
    lines = [f"scale bench: {r['keys']:,} keys, {r['users']:,} customers, PostgreSQL + Redis, one relay process", ""]
    lines.append(f"bulk seed                      {r['seed_s']:>8} s        (≈ {r['seed_s'] * million / 60:.1f} min at 1M keys, linear)")
    lines.append(f"routing snapshot publish       {r['publish_ms']:>8} ms       (does not grow with keys)")
    lines.append(f"Redis per key                  {r['redis_bytes_per_key']:>8} B        (≈ {r['redis_bytes_per_key'] * 1e6 / 2**20:.0f} MB at 1M keys)")
    for name, ms in r["writes_ms"].items():
        lines.append(f"write p50: {name:<19} {ms:>8} ms")
    lines.append(f"new key usable at the relay    {r['new_key_usable_ms'][0]:>8} ms p50, {r['new_key_usable_ms'][1]} ms max")
    lines.append(f"disable effective (cached key) {r['disable_effective_ms'][0]:>8} ms p50, {r['disable_effective_ms'][1]} ms max")
    lines.append(f"ban effective (cached key)     {r['ban_effective_ms'][0]:>8} ms p50, {r['ban_effective_ms'][1]} ms max")
    lines.append(f"relay RSS                      {r['rss_idle_mb']:>8} MB idle, {r['rss_warm_mb']} MB with {r['warm_keys']:,} keys cached")
    lat = r["latency"]
    lines.append(f"request latency, quiet         {lat['quiet_ms'][0]:>8} ms p50, {lat['quiet_ms'][1]} p99, {lat['quiet_ms'][2]} max")
    lines.append(f"  while config changes         {lat['changing_ms'][0]:>8} ms p50, {lat['changing_ms'][1]} p99, {lat['changing_ms'][2]} max "
                 f"({lat['publishes']} publishes, {lat['publish_ms']} ms each p50)")
    cpu = r["cpu"]
    lines.append(f"relay CPU per request          {cpu['hit_us']:>8} µs on a cache hit, {cpu['miss_us']} µs on a miss")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
