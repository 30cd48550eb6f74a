"""A real `switchboard up` process (embedded SQLite and Redis, as `make run` has it), driven by its
CLI: the gateway end-to-end and browser tests run against."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
READ_ONLY = {"balance"}  # CLI commands that publish nothing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """`switchboard up` in its own process group, plus the CLI pointed at the same instance."""

    def __init__(self, instance: Path, extra_env: dict | None = None):
        self.instance = instance
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env.update(
            SWITCHBOARD_INSTANCE=str(instance),
            SWITCHBOARD_PORT=str(self.port),
            SWITCHBOARD_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            # the fake upstreams listen on loopback: opened explicitly, as an operator would
            SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8,::1/128",
        )
        env.update(extra_env or {})
        self.env = env
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "up"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_ready()

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))

    def _wait_ready(self, timeout: float = 60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("switchboard up exited:\n" + "\n".join(self.output))
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("switchboard up did not become healthy:\n" + "\n".join(self.output))

    @property
    def operator(self) -> tuple[str, str]:
        """The first operator's email and password, as `up` printed them."""
        for line in self.output:
            if "First operator (shown once):" in line:
                email, _, password = line.split("):", 1)[1].strip().partition(" / ")
                return email, password
        raise AssertionError("no first operator in the output of `up`")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def cli(self, *args: str, check: bool = True) -> dict | subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "controlplane", *args, "--json"], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=60)
        if not check:
            return result
        if result.returncode != 0:
            raise AssertionError(f"switchboard {' '.join(args)} failed: {result.stderr}")
        lines = result.stdout.strip().splitlines()
        if args and args[0] not in READ_ONLY:
            self.wait_for_relay()
        return json.loads(lines[-1])

    def wait_for_relay(self, timeout: float = 15) -> None:
        """Until the relay has loaded the latest published snapshot and applied the latest key change
        (what a CLI write just published)."""
        import redis

        from relay.keys import CHANGES_STREAM

        client = redis.Redis(unix_socket_path=str(self.instance / "redis" / "redis.sock"))
        target = int(client.get("sb:cfg:version") or 0)
        newest = client.xrevrange(CHANGES_STREAM, "+", "-", count=1)
        changes = int(newest[0][0].split(b"-")[0]) if newest else 0
        deadline = time.time() + timeout
        while time.time() < deadline:
            health = requests.get(self.base_url + "/healthz", timeout=5).json()
            if health.get("snapshot_version", 0) >= target and health.get("key_changes_seen", 0) >= changes:
                return
            time.sleep(0.05)
        raise AssertionError(f"the relay did not load snapshot v{target} and key change {changes} within {timeout}s")

    def balance(self, email: str) -> dict:
        return self.cli("balance", "--user", email)

    def wait_for_balance(self, email: str, expected: int, timeout: float = 20) -> dict:
        """The consumer ingests usage as it arrives; the settled balance follows within seconds. Each
        look is a CLI process (about a second of imports), so it is taken once the usage stream is
        empty (an event leaves it only once written to SQL), and again if an event was still on its way."""
        import redis

        from relay.usage import USAGE_STREAMS

        client = redis.Redis(unix_socket_path=str(self.instance / "redis" / "redis.sock"))
        deadline = time.time() + timeout
        seen = None
        while time.time() < deadline:
            while client.xlen(USAGE_STREAMS[0]) and time.time() < deadline:
                time.sleep(0.05)
            seen = self.balance(email)
            if seen["balance_micro_usd"] == expected:
                return seen
            time.sleep(0.3)
        raise AssertionError(f"balance of {email} is {seen}, expected {expected}")

    def stop(self, sig=signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
