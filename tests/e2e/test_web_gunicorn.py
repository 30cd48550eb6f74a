"""`switchboard web` is the control plane under gunicorn with gevent workers (wsgi.py), on the
embedded defaults: it serves the consoles, and SIGTERM stops the master and every worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.gateway import ROOT, free_port

pytestmark = pytest.mark.e2e


def test_web_runs_gunicorn_with_gevent_workers_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    port = free_port()
    env.update(SWITCHBOARD_INSTANCE=str(tmp_path), SWITCHBOARD_PORT=str(port), PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "-m", "controlplane", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "controlplane", "web", "--workers", "2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "the control plane did not start"
            time.sleep(0.2)
        login = requests.get(f"http://127.0.0.1:{port}/login", timeout=5)
        assert login.status_code == 200 and "gunicorn" in login.headers.get("Server", "")
        assert login.headers["X-Request-Id"].startswith("web_")
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "redis": "ok"}
        # any worker answers a scrape with the same state, read from SQL and Redis
        scrapes = [requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5) for _ in range(4)]
        assert all(r.status_code == 200 and "switchboard_usage_backlog_events 0.0" in r.text for r in scrapes)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert all(not os.path.exists(f"/proc/{pid}") for pid in workers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_json_logs_make_gunicorns_own_lines_json_with_the_request_id(tmp_path):
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    port = free_port()
    env.update(SWITCHBOARD_INSTANCE=str(tmp_path), SWITCHBOARD_PORT=str(port), PYTHONUNBUFFERED="1", SWITCHBOARD_LOG_FORMAT="json")
    subprocess.run([sys.executable, "-m", "controlplane", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "controlplane", "web", "--workers", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                login = requests.get(f"http://127.0.0.1:{port}/login", timeout=1)
                if login.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "the control plane did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        lines = [json.loads(line) for line in proc.stdout.read().splitlines() if line.strip()]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert any(entry["logger"] == "gunicorn.error" and "Listening at" in entry["message"] for entry in lines)
    access = [entry for entry in lines if entry["logger"] == "gunicorn.access" and "/login" in entry["message"]]
    assert access and access[-1]["request_id"] == login.headers["X-Request-Id"]
