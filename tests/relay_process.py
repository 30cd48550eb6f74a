"""A real `switchboard relay` process (gevent-patched, as in production) on the test's Redis: for what
the in-process harness cannot show — requests truly in flight together, and a relay that restarts."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import requests

from relay.settings import RelaySettings
from tests import process_groups
from tests.gateway import free_port

ROOT = Path(__file__).resolve().parents[1]


class RelayProcess:
    def __init__(self, settings: RelaySettings, workers: int = 1, **env: str):
        self.port = free_port()
        self.stderr_text = ""
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_") and k != "DATABASE_URL"}
        environ.update(REDIS_URL=settings.redis_url, SWITCHBOARD_ENCRYPTION_KEY=settings.encryption_key or "",
                       SWITCHBOARD_INSTANCE=str(settings.instance_dir), SWITCHBOARD_LOG_LEVEL="WARNING",
                       SWITCHBOARD_SNAPSHOT_POLL_SECONDS="0.5",
                       SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8", **env)
        self.proc = subprocess.Popen([sys.executable, "-m", "controlplane", "relay", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--workers", str(workers)],
                                     cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the relay exited: " + self.proc.stderr.read().decode(errors="replace")[-2000:])
            try:
                if requests.get(self.url + "/healthz", timeout=1).json()["snapshot_version"]:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the relay did not start")

    def stop(self) -> None:
        process_groups.stop(self.proc)
        if not self.proc.stderr.closed:
            self.stderr_text = self.proc.stderr.read().decode(errors="replace")  # what it logged, for tests that read it
            self.proc.stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
