"""`make bench`: one relay process on core 0; the fake upstream, the load generators, the worker, the
usage consumer and Redis on core 1. Direct-to-upstream vs through-the-relay, non-streaming (wrk) and streaming (a gevent
client), at 1, 32 and 256 in flight; then 2,000 slow streams held open at once.

Each relay run also reports the whole system per request, by component: the relay, the usage
consumer (`switchboard ingest`) and Redis — CPU from /proc, the consumer's and Redis's read once the
run's usage is ingested, so that they cover exactly the run's events. Their sum is what one request
costs one core.

Prints one table and writes bench/results/<time>.json. Bounded: every run stops by time, loopback
only, a full run takes about two minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.measure import ProcessSample, added, cpu_seconds, free_ports, health, rss_kb, sql_driver_loaded, wait_http
from controlplane.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
RELAY_CORES = "0"
LOAD_CORES = "1"
CHUNKS, GAP_MS = 20, 10  # the streaming upstream: 20 chunks, 10 ms apart


def pinned(cores: str, *argv: str) -> list[str]:
    return ["taskset", "-c", cores, *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else list(argv)


class Bench:
    def __init__(self, seconds: float, relay_workers: int, ramp: float | None = None, hold_gap_ms: int = 1000):
        self.seconds = seconds
        self.hold_gap_ms = hold_gap_ms  # between the held streams' 20 chunks
        # bench.instructions runs the relay under valgrind: a command in front of it, a longer start
        self.relay_prefix: list[str] = []
        self.relay_start_seconds = 30.0
        self.ramp = CHUNKS * GAP_MS / 1000 if ramp is None else ramp
        self.relay_workers = relay_workers
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        # The fake upstream listens on loopback, which the egress guard admits only when asked; every
        # load generator connects from 127.0.0.1: one address holding 2,000 streams.
        self.env.update(SWITCHBOARD_INSTANCE=str(self.dir), SWITCHBOARD_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
                        SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8", SWITCHBOARD_HTTP_MAX_CONNECTIONS_PER_IP="0")
        self.procs: list[subprocess.Popen] = []
        self.redis = EmbeddedRedis(self.dir)

    # --- setup -----------------------------------------------------------------------------------
    def spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:
        # Logs go to a file: a pipe nobody reads would fill up and stall the process writing to it.
        log = open(self.dir / f"{len(self.procs)}-{Path(argv[-1]).name}.log", "ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str) -> dict:
        out = subprocess.run([PY, "-m", "controlplane", *args, "--json"], cwd=ROOT, env=self.env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start(self) -> None:
        self.env["REDIS_URL"] = self.redis.acquire()
        redis_pid = self.redis.pidfile.read_text().strip()
        subprocess.run(["taskset", "-p", "-c", LOAD_CORES, redis_pid], capture_output=True)
        subprocess.run([PY, "-m", "controlplane", "db", "upgrade"], cwd=ROOT, env=self.env, capture_output=True, check=True)
        # Free ports, not fixed ones: another run on the same machine (a test's smoke run) must not
        # answer in this one's place.
        self.upstream_port, self.slow_port, self.relay_port = free_ports(3)
        self.spawn(pinned(LOAD_CORES, PY, "-m", "bench.fake_upstream", str(self.upstream_port), "--chunks", str(CHUNKS), "--gap-ms", str(GAP_MS)))
        self.spawn(pinned(LOAD_CORES, PY, "-m", "bench.fake_upstream", str(self.slow_port), "--chunks", "20", "--gap-ms", str(self.hold_gap_ms)))
        wait_http(f"http://127.0.0.1:{self.upstream_port}/v1/models")
        wait_http(f"http://127.0.0.1:{self.slow_port}/v1/models")
        self.cli("channel", "add", "--name", "bench", "--type", "openai", "--base-url", f"http://127.0.0.1:{self.upstream_port}/v1",
                 "--keys", "sk-bench", "--models", "bench-model")
        self.cli("channel", "add", "--name", "bench-slow", "--type", "openai", "--base-url", f"http://127.0.0.1:{self.slow_port}/v1",
                 "--keys", "sk-bench", "--models", "slow-model", "--model-map", "slow-model=bench-model")
        for model in ("bench-model", "slow-model"):
            self.cli("price", "set", model, "--input", "1", "--output", "2", "--now")
        self.cli("user", "create", "--email", "bench@example.com")
        self.cli("topup", "--user", "bench@example.com", "--usd", "1000000", "--reason", "benchmark")
        self.key = self.cli("key", "create", "--user", "bench@example.com", "--name", "bench")["key"]
        cores = RELAY_CORES if self.relay_workers == 1 else f"0-{self.relay_workers - 1}"
        self.relay = self.spawn(pinned(cores, *self.relay_prefix, PY, "-m", "controlplane", "relay", "--host", "127.0.0.1", "--port", str(self.relay_port),
                                       "--workers", str(self.relay_workers)))
        # Request logging on: usage events are ingested as in production, by the usage consumer on the
        # load core. It runs at the lowest priority so that catching up never slows the load generator,
        # whose timings are the measurement; what it has not ingested yet is reported after each run.
        # (nice and taskset exec the command: the process spawned is the consumer itself.)
        spawned = {name: self.spawn(["nice", "-n", "19", *pinned(LOAD_CORES, PY, "-m", "controlplane", name)])
                   for name in ("worker", "scheduler", "ingest")}
        self.ingest = spawned["ingest"]
        wait_http(self.relay_url + "/healthz", timeout=self.relay_start_seconds)
        deadline = time.time() + self.relay_start_seconds
        while time.time() < deadline and health(self.relay_url)["snapshot_version"] == 0:
            time.sleep(0.1)

    @property
    def relay_url(self) -> str:
        return f"http://127.0.0.1:{self.relay_port}"

    def side_pids(self) -> dict[str, int]:
        """The rest of the system a request costs: the usage consumer and Redis."""
        return {"ingest": self.ingest.pid, "redis": int(self.redis.pidfile.read_text().strip())}

    def relay_pids(self) -> list[int]:
        children = subprocess.run(["pgrep", "-P", str(self.relay.pid)], capture_output=True, text=True).stdout.split()
        return [self.relay.pid] + [int(p) for p in children] if self.relay_workers > 1 else [self.relay.pid]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.release()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- load ------------------------------------------------------------------------------------
    def wrk(self, base: str, concurrency: int) -> dict:
        env = dict(self.env, BENCH_KEY=self.key)
        out = subprocess.run(pinned(LOAD_CORES, "wrk", "-t1", f"-c{concurrency}", f"-d{int(self.seconds)}s", "--timeout", "10s",
                                    "-s", str(ROOT / "bench" / "chat.lua"), base + "/v1/chat/completions"),
                             env=env, capture_output=True, text=True, check=True)
        data = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
        seconds = data["duration_us"] / 1e6
        return {"requests": data["requests"], "errors": data["errors"], "rps": round(data["requests"] / seconds, 1),
                "p50_ms": data["p50_us"] / 1000, "p99_ms": data["p99_us"] / 1000}

    def streams(self, base: str, concurrency: int, seconds: float | None = None, max_requests=None) -> dict:
        argv = [PY, "-m", "bench.stream_client", base + "/v1/chat/completions", self.key, "--concurrency", str(concurrency),
                "--seconds", str(seconds or self.seconds)]
        argv += ["--ramp", str(self.ramp)]  # streams in flight, not bursts: see stream_client.run
        if max_requests:
            argv += ["--max-requests", str(max_requests)]
        out = subprocess.run(pinned(LOAD_CORES, *argv), cwd=ROOT, env=self.env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def through_relay(self, load) -> dict:
        """Run `load` against the relay and add what the relay spent doing it."""
        before = ProcessSample.of(self.relay_pids())
        sides_before = {name: cpu_seconds(pid) for name, pid in self.side_pids().items()}
        commands_before = self.redis_commands()
        counters_before = health(self.relay_url)
        result = load()
        counters_after = health(self.relay_url)
        after = ProcessSample.of(self.relay_pids())
        completed = result.get("requests", result.get("count", 0)) + result.get("errors", 0)
        result["cpu_us_per_req"] = round((after.cpu_seconds - before.cpu_seconds) * 1e6 / max(completed, 1), 1)
        spent = after.cpu_seconds - before.cpu_seconds
        result["kernel_share"] = round((after.kernel_seconds - before.kernel_seconds) / spent, 2) if spent > 0 else None
        result["rss_mb"] = round(after.rss_kb / 1024, 1)
        # /healthz answers from one relay process: its own round trips over its own requests.
        served = max(counters_after["requests"] - counters_before["requests"] - 1, 1)
        result["redis_rt_per_req"] = round((counters_after["redis_round_trips"] - counters_before["redis_round_trips"]) / served, 2)
        if self.relay_workers > 1:  # the two /healthz reads may come from different processes: not comparable
            result["redis_rt_per_req"] = None
        result["usage_backlog"] = self.usage_backlog()
        # The consumer runs at the lowest priority and catches up after the load: its CPU (and
        # Redis's) is read once the run's events are all ingested.
        result["usage_drain_s"] = self.drain_usage(60)["seconds"]
        for name, pid in self.side_pids().items():
            result[f"{name}_cpu_us_per_req"] = round((cpu_seconds(pid) - sides_before[name]) * 1e6 / max(completed, 1), 1)
        result["redis_commands"] = command_costs(commands_before, self.redis_commands(), completed)
        parts = (result["cpu_us_per_req"], result["ingest_cpu_us_per_req"], result["redis_cpu_us_per_req"])
        result["system_cpu_us_per_req"] = round(sum(parts), 1)
        return result

    def redis_commands(self) -> dict[str, tuple[int, int]]:
        """Redis's own count of calls and µs spent per command (`INFO commandstats`); a script's
        commands count both in EVALSHA and on their own."""
        import redis

        with redis.Redis.from_url(self.env["REDIS_URL"]) as client:
            return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in client.info("commandstats").items()}

    def usage_backlog(self) -> int:
        """Usage events the worker has not ingested yet (read or not), as the operations page counts them."""
        import redis

        from controlplane.operations import usage_backlog

        with redis.Redis.from_url(self.env["REDIS_URL"]) as client:
            return usage_backlog(client)[0]

    def drain_usage(self, limit: float = 120.0) -> dict:
        """Wait (bounded) until the worker has ingested every usage event of the run."""
        started = time.time()
        while time.time() - started < limit and self.usage_backlog():
            time.sleep(0.5)
        return {"left": self.usage_backlog(), "seconds": round(time.time() - started, 1)}


def command_costs(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], requests: int) -> dict[str, dict]:
    """Per request: each Redis command's calls and µs inside Redis over a run, the costliest first."""
    out = {}
    for name, (calls, usec) in after.items():
        calls -= before.get(name, (0, 0))[0]
        usec -= before.get(name, (0, 0))[1]
        if calls > 0:
            out[name] = {"calls_per_req": round(calls / max(requests, 1), 2), "us_per_call": round(usec / calls, 2),
                         "us_per_req": round(usec / max(requests, 1), 2)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us_per_req"]))


def run(seconds: float, concurrencies: list[int], relay_workers: int, hold_streams: int, ramp: float | None = None,
        hold_gap_ms: int = 1000) -> dict:
    bench = Bench(seconds, relay_workers, ramp, hold_gap_ms)
    rows = []
    try:
        bench.start()
        direct_url = f"http://127.0.0.1:{bench.upstream_port}"
        bench.wrk(bench.relay_url, 32)  # warm-up: pools, snapshot, JIT-free but cache-warm
        bench.drain_usage()  # and the usage consumer running (its start-up is not a request's cost)
        for concurrency in concurrencies:
            direct = bench.wrk(direct_url, concurrency)
            relay = bench.through_relay(lambda c=concurrency: bench.wrk(bench.relay_url, c))
            rows.append({"mode": "non-stream", "concurrency": concurrency, "direct": direct, "relay": relay,
                         "added_p50_ms": round(relay["p50_ms"] - direct["p50_ms"], 3), "added_p99_ms": round(relay["p99_ms"] - direct["p99_ms"], 3)})
        for concurrency in concurrencies:
            direct = bench.streams(direct_url, concurrency)
            relay = bench.through_relay(lambda c=concurrency: bench.streams(bench.relay_url, c))
            rows.append({"mode": "stream", "concurrency": concurrency, "direct": direct, "relay": relay,
                         "added_ttft_p50_ms": added(relay["ttfb_p50_ms"], direct["ttfb_p50_ms"]),
                         "added_ttft_p99_ms": added(relay["ttfb_p99_ms"], direct["ttfb_p99_ms"])})
        held = hold_open(bench, hold_streams) if hold_streams else None
        sql_loaded = sql_driver_loaded(bench.relay_pids())
        drained = bench.drain_usage()
    finally:
        bench.stop()
    return {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds_per_run": seconds, "relay_processes": relay_workers,
            "cpu": os.cpu_count(), "stream_ramp_s": bench.ramp, "rows": rows, "held_streams": held, "sql_driver_loaded": sql_loaded, "usage_drain": drained}


def hold_open(bench: Bench, count: int) -> dict:
    """Open `count` slow streams (20 chunks, 1 s apart) at once; RSS per stream and health latency."""
    pid = bench.relay_pids()[0]
    baseline = rss_kb(pid)
    argv = [PY, "-m", "bench.stream_client", bench.relay_url + "/v1/chat/completions", bench.key, "--concurrency", str(count),
            "--seconds", "25", "--max-requests", "1", "--model", "slow-model"]
    proc = subprocess.Popen(pinned(LOAD_CORES, *argv), cwd=ROOT, env=bench.env, stdout=subprocess.PIPE, text=True)
    peak, health_ms = baseline, []
    deadline = time.time() + 30
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        peak = max(peak, rss_kb(pid))
        started = time.perf_counter()
        try:
            requests.get(bench.relay_url + "/healthz", timeout=5)
            health_ms.append((time.perf_counter() - started) * 1000)
        except requests.RequestException:
            health_ms.append(None)
    out, _ = proc.communicate(timeout=60)
    streamed = json.loads(out.strip().splitlines()[-1])
    answered = [h for h in health_ms if h is not None]
    return {"streams": count, "completed": streamed["count"], "errors": streamed["errors"], "first_error": streamed["first_error"],
            "rss_baseline_mb": round(baseline / 1024, 1), "rss_peak_mb": round(peak / 1024, 1),
            "kb_per_stream": round((peak - baseline) / count, 1), "health_checks": len(health_ms),
            "health_failed": len(health_ms) - len(answered), "health_max_ms": round(max(answered), 1) if answered else None}


def table(report: dict) -> str:
    lines = ["| mode | in flight | direct req/s | relay req/s | direct p50 / p99 ms | relay p50 / p99 ms | added p50 / p99 ms "
             "| relay CPU µs/req (kernel share) | relay RSS MB | Redis RT/req |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    system = ["| mode | in flight | relay µs/req | ingest µs/req | Redis µs/req | whole system µs/req | req/s on one core |",
              "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        d, r = row["direct"], row["relay"]
        if row["mode"] == "non-stream":
            lat_d, lat_r = f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f}", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"
            added = f"{row['added_p50_ms']:.2f} / {row['added_p99_ms']:.2f}"
        else:
            lat_d = f"TTFT {d['ttfb_p50_ms']} / {d['ttfb_p99_ms']}"
            lat_r = f"TTFT {r['ttfb_p50_ms']} / {r['ttfb_p99_ms']}"
            added = f"TTFT {row['added_ttft_p50_ms']} / {row['added_ttft_p99_ms']}"
        lines.append(f"| {row['mode']} | {row['concurrency']} | {d['rps']} | {r['rps']} | {lat_d} | {lat_r} | {added} | "
                     f"{r['cpu_us_per_req']} ({r.get('kernel_share')}) | {r['rss_mb']} | {r['redis_rt_per_req']} |")
        whole = r.get("system_cpu_us_per_req")
        if whole:
            system.append(f"| {row['mode']} | {row['concurrency']} | {r['cpu_us_per_req']} | {r['ingest_cpu_us_per_req']} | "
                          f"{r['redis_cpu_us_per_req']} | {whole} | {round(1e6 / whole)} |")
    if len(system) > 2:
        lines += ["", "The whole system per request (relay + usage consumer + Redis; CPU, all cores):", "", *system]
    for row in report["rows"]:
        costs = row["relay"].get("redis_commands")
        if costs:
            top = ", ".join(f"{name} {c['calls_per_req']}× {c['us_per_call']} µs" for name, c in list(costs.items())[:5])
            lines.append(f"Redis per {row['mode']} request at {row['concurrency']} in flight, inside Redis: {top}")
    held = report.get("held_streams")
    if held:
        lines.append("")
        lines.append(f"{held['streams']} slow streams held open: {held['completed']} completed, {held['errors']} errors; relay RSS "
                     f"{held['rss_baseline_mb']} → {held['rss_peak_mb']} MB = {held['kb_per_stream']} KB per stream; "
                     f"/healthz answered {held['health_checks'] - held['health_failed']}/{held['health_checks']} times, slowest {held['health_max_ms']} ms")
    drained = report.get("usage_drain")
    if drained:
        lines.append(f"usage events not yet ingested after each relay run: {', '.join(str(r['relay'].get('usage_backlog')) for r in report['rows'])}; "
                     f"all ingested {drained['seconds']} s after the last run" if not drained["left"] else
                     f"{drained['left']} usage events still not ingested {drained['seconds']} s after the last run")
    if report.get("sql_driver_loaded") is False:
        lines.append("SQL statements in the relay: 0 — no database driver (libpq, sqlite3, psycopg) is mapped into the relay process")
    else:
        lines.append(f"SQL driver mapped into the relay process: {report.get('sql_driver_loaded')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=4, help="length of each run")
    parser.add_argument("--concurrency", default="1,32,256")
    parser.add_argument("--relay-workers", type=int, default=1)
    parser.add_argument("--hold-streams", type=int, default=2000, help="slow streams to hold open at once (0 to skip)")
    parser.add_argument("--hold-gap-ms", type=int, default=1000, help="between a held stream's 20 chunks")
    parser.add_argument("--stream-ramp", type=float, default=None,
                        help="seconds over which stream clients start (default: one stream's length; 0: all at once, in lockstep)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    report = run(args.seconds, [int(c) for c in args.concurrency.split(",")], args.relay_workers, args.hold_streams, args.stream_ramp,
                 args.hold_gap_ms)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"{report['when'].replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
