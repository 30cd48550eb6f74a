"""`make bench-compare`: Switchboard and LiteLLM proxy side by side on the same fake upstream, the
same wrk load and the same core pinning, so the ratio is measured in one run (not in CI).

LiteLLM is installed into its own virtualenv (bench/.venv-litellm) on first use.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from bench.measure import ProcessSample, wait_http
from bench.run import RELAY_CORES, ROOT, Bench, pinned

VENV = ROOT / "bench" / ".venv-litellm"
CONFIG = """model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{port}/v1
      api_key: sk-bench
general_settings:
  master_key: sk-master
"""


def ensure_litellm() -> Path:
    binary = VENV / "bin" / "litellm"
    if not binary.exists():
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return binary


def litellm_rows(bench: Bench, concurrencies: list[int]) -> list[dict]:
    binary = ensure_litellm()
    config = bench.dir / "litellm.yaml"
    config.write_text(CONFIG.format(port=bench.upstream_port))
    port = 18441
    proc = bench.spawn(pinned(RELAY_CORES, str(binary), "--config", str(config), "--port", str(port), "--num_workers", "1"))
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
    url = f"http://127.0.0.1:{port}"
    key, bench.key = bench.key, "sk-master"
    try:
        bench.wrk(url, 8)  # warm-up
        rows = []
        for concurrency in concurrencies:
            pids = [proc.pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
            before = ProcessSample.of(pids)
            result = bench.wrk(url, concurrency)
            after = ProcessSample.of(pids)
            result["cpu_us_per_req"] = round((after.cpu_seconds - before.cpu_seconds) * 1e6 / max(result["requests"], 1), 1)
            rows.append({"gateway": "litellm", "concurrency": concurrency, **result})
    finally:
        bench.key = key
        proc.terminate()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", default="1,32,256")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    bench = Bench(args.seconds, 1)
    rows = []
    try:
        bench.start()
        direct_url = f"http://127.0.0.1:{bench.upstream_port}"
        bench.wrk(bench.relay_url, 32)
        for concurrency in concurrencies:
            rows.append({"gateway": "direct", "concurrency": concurrency, **bench.wrk(direct_url, concurrency)})
            rows.append({"gateway": "switchboard", "concurrency": concurrency, **bench.through_relay(lambda c=concurrency: bench.wrk(bench.relay_url, c))})
        rows += litellm_rows(bench, concurrencies)
    finally:
        bench.stop()
    print("| gateway | in flight | req/s | p50 ms | p99 ms | CPU µs/req |\n|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["concurrency"], r["gateway"])):
        print(f"| {row['gateway']} | {row['concurrency']} | {row['rps']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row.get('cpu_us_per_req', '—')} |")
    out = ROOT / "bench" / "results" / f"compare-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
