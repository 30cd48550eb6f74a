"""`python -m bench.instructions`: instructions the relay executes per request, counted by valgrind's
callgrind — a figure that other processes on the machine cannot disturb, unlike CPU time.

The relay runs under callgrind with counting off; after warm-up requests, counting is switched on
(`callgrind_control -i on`, then `-z`), a fixed number of requests is sent one at a time, and the
dump's total is divided by their number. Non-streamed chat requests first, then streams of the
bench's 20-chunk upstream. Compare builds by running it in each checkout; runs of one build agree
within about 1%.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable

import requests

from bench.run import Bench

BODY = {"model": "bench-model", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}


def counted(bench: Bench, out_dir: str, name: str, send: Callable[[int], None], n: int) -> float:
    pid = str(bench.relay.pid)
    send(max(20, n // 5))  # warm-up, uncounted
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    send(5)  # code paths instrumented anew
    subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
    send(n)
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", name, pid], check=True, capture_output=True)
    time.sleep(1)
    dumps = sorted(glob.glob(os.path.join(out_dir, "callgrind.out*")), key=os.path.getmtime)
    with open(dumps[-1]) as dump:  # the last `totals:` line: what was counted since the zeroing
        total = [int(line.split()[1]) for line in dump if line.startswith("totals:")][-1]
    for dump in dumps:
        os.unlink(dump)
    return total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="non-streamed requests counted")
    parser.add_argument("--streams", type=int, default=60, help="streams counted")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("bench.instructions needs valgrind (apt-get install valgrind)")
    bench = Bench(seconds=5, relay_workers=1)
    bench.relay_prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={bench.dir}/callgrind.out"]
    bench.relay_start_seconds = 600
    try:
        bench.start()
        session = requests.Session()
        url, headers = bench.relay_url + "/v1/chat/completions", {"Authorization": "Bearer " + bench.key}

        def plain(n: int) -> None:
            for _ in range(n):
                answer = session.post(url, json=BODY, headers=headers, timeout=60)
                answer.raise_for_status()

        def streams(n: int) -> None:
            for _ in range(n):
                with session.post(url, json=dict(BODY, stream=True), headers=headers, timeout=60, stream=True) as answer:
                    answer.raise_for_status()
                    for _ in answer.iter_content(None):
                        pass

        result = {"instructions_per_request": round(counted(bench, str(bench.dir), "plain", plain, args.requests)),
                  "instructions_per_stream": round(counted(bench, str(bench.dir), "stream", streams, args.streams))}
        print(json.dumps(result))
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
