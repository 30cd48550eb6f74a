"""Reading what a process spent: CPU seconds and RSS from /proc, plus small HTTP helpers."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import requests

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class ProcessSample:
    cpu_seconds: float
    rss_kb: int
    kernel_seconds: float = 0.0

    @classmethod
    def of(cls, pids: list[int]) -> "ProcessSample":
        times = [cpu_times(p) for p in pids]
        return cls(sum(u + k for u, k in times), sum(rss_kb(p) for p in pids), sum(k for _, k in times))


def sql_driver_loaded(pids: list[int]) -> bool:
    """True when any database client library is mapped into one of the processes."""
    markers = ("libpq", "sqlite3", "psycopg")
    for pid in pids:
        with open(f"/proc/{pid}/maps") as handle:
            if any(marker in line for line in handle for marker in markers):
                return True
    return False


def health(base: str) -> dict:
    return requests.get(base + "/healthz", timeout=10).json()


def free_ports(count: int) -> list[int]:
    """Ports the kernel has just handed out (all bound together, so they differ): two runs on one
    machine (a benchmark beside the test suite's smoke run) never find each other's servers."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_ports(count: int) -> list[int]:
    """Free ports whose Redis Cluster bus ports (+10000) are free too, all below the kernel's
    ephemeral range (32768 on), from which `free_ports` and every client socket draw."""
    import random
    import socket

    found: list[int] = []
    while len(found) < count:
        port = random.randint(12_000, 22_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        if port not in found:
            found.append(port)
    return found


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def added(a: float | None, b: float | None) -> float | None:
    """What the relay added over direct (a − b), rounded."""
    if a is None or b is None:
        return None
    return round(a - b, 3)
