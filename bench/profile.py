"""Profile the relay under load: py-spy samples it while wrk (or the stream client) runs.

    .venv/bin/python -m bench.profile [--stream] [--concurrency 32] [--seconds 8]
Prints where the relay's CPU goes (inclusive per function, and self time per module); py-spy must
be installed (`pip install py-spy`).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.run import Bench


def record(pid: int, seconds: float, out: Path, native: bool = False) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "1000", "--format", "raw",
                    "--output", str(out), *(["--native"] if native else ["--nonblocking"])], capture_output=True, check=True)


def module_of(frame: str) -> str:
    path = frame.rsplit("(", 1)[-1] if "(" in frame else frame
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0]
    if "/relay/" in path:
        return "relay/" + path.split("/relay/")[1].split(":")[0]
    if "/lib/python" in path:
        return "stdlib:" + path.rsplit("/", 1)[-1].split(":")[0]
    return path.rsplit("/", 1)[-1].split(":")[0] or "?"


def summarise(raw: Path, top: int = 45) -> str:
    inclusive, by_module, by_function, total = Counter(), Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        for name in {f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in frames}:
            inclusive[name] += n
        by_module[module_of(frames[-1])] += n
        by_function[frames[-1].split(" (")[0] + " " + frames[-1].rsplit("/", 1)[-1].rstrip(")")] += n
    lines = [f"{total} samples", "--- inclusive"]
    lines += [f"{100 * v / total:5.1f}% {k[:130]}" for k, v in inclusive.most_common(top)]
    lines += ["--- self time by function"]
    lines += [f"{100 * v / total:5.1f}% {k[:130]}" for k, v in by_function.most_common(top)]
    lines += ["--- self time by module"]
    lines += [f"{100 * v / total:5.1f}% {k}" for k, v in by_module.most_common(25)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--raw", help="keep py-spy's raw stacks in this file")
    parser.add_argument("--native", action="store_true", help="include C frames (extensions, the interpreter, libev)")
    args = parser.parse_args()
    bench = Bench(args.seconds + 2, 1)
    out = Path(args.raw) if args.raw else Path(tempfile.mkdtemp()) / "profile.txt"
    try:
        bench.start()
        bench.wrk(bench.relay_url, 32)
        load = (lambda: bench.streams(bench.relay_url, args.concurrency)) if args.stream else (lambda: bench.wrk(bench.relay_url, args.concurrency))
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(load()))
        runner.start()
        time.sleep(1)
        record(bench.relay.pid, args.seconds, out, args.native)
        runner.join()
    finally:
        bench.stop()
    print(result)
    print(summarise(out))


if __name__ == "__main__":
    main()
