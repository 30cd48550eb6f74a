"""Streaming load: N concurrent clients, each posting stream requests over keep-alive sockets and
timing the first body byte and the whole stream. gevent, raw sockets, no HTTP library overhead.

    python -m bench.stream_client URL KEY --concurrency 32 --seconds 5
Prints one JSON object: count, errors, ttfb and total percentiles in ms.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402

def request_bytes(host: str, path: str, key: str, model: str) -> bytes:
    body = json.dumps({"model": model, "stream": True, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def one_stream(sock: socket.socket, payload: bytes) -> tuple[float, float]:
    started = time.perf_counter()
    sock.sendall(payload)
    first = None
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-stream")
        if first is None:
            head_end = (data + chunk).find(b"\r\n\r\n")
            if head_end >= 0 and len(data + chunk) > head_end + 4:
                first = time.perf_counter()
        data += chunk
        if data.endswith(b"0\r\n\r\n") and b"[DONE]" in data:
            break
        if data.startswith(b"HTTP/1.1 4") or data.startswith(b"HTTP/1.1 5"):
            raise RuntimeError(data[:200].decode(errors="replace"))
    if first is None:
        first = time.perf_counter()
    return (first - started) * 1000, (time.perf_counter() - started) * 1000


def worker(url, key, model, deadline, max_requests, results, errors, delay: float = 0.0):
    gevent.sleep(delay)
    parts = urlsplit(url)
    payload = request_bytes(parts.netloc, parts.path, key, model)
    sock = None
    done = 0
    while time.time() < deadline and (max_requests is None or done < max_requests):
        try:
            if sock is None:
                sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            results.append(one_stream(sock, payload))
            done += 1
        except Exception as error:  # noqa: BLE001 - counted, reported
            errors.append(str(error)[:200])
            if sock is not None:
                sock.close()
            sock = None
            gevent.sleep(0.05)
    if sock is not None:
        sock.close()


def run(url: str, key: str, concurrency: int, seconds: float, max_requests: int | None = None, model: str = "bench-model",
        ramp: float = 0.0) -> dict:
    """`ramp` spreads the clients' first requests evenly over that many seconds: clients that all
    start at one instant stay in lockstep (every stream takes as long), and the measurement becomes
    one of bursts of `concurrency` simultaneous arrivals rather than of that many streams in flight."""
    results: list[tuple[float, float]] = []
    errors: list[str] = []
    deadline = time.time() + seconds
    started = time.perf_counter()
    gevent.joinall([gevent.spawn(worker, url, key, model, deadline, max_requests, results, errors, ramp * i / concurrency)
                    for i in range(concurrency)],
                   timeout=seconds + 60)
    elapsed = time.perf_counter() - started
    ttfb = [r[0] for r in results]
    total = [r[1] for r in results]
    return {"count": len(results), "errors": len(errors), "first_error": errors[0] if errors else None,
            "rps": round(len(results) / elapsed, 1), "ttfb_p50_ms": percentile(ttfb, 0.5), "ttfb_p99_ms": percentile(ttfb, 0.99),
            "total_p50_ms": percentile(total, 0.5), "total_p99_ms": percentile(total, 0.99)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--max-requests", type=int, default=None, help="per client")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds over which the clients' first requests are spread")
    args = parser.parse_args()
    print(json.dumps(run(args.url, args.key, args.concurrency, args.seconds, args.max_requests, args.model, args.ramp)))
