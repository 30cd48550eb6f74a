"""`switchboard up` on a bare machine: sets itself up, prints the first operator once, keeps its
secrets private, and leaves nothing running after Ctrl-C."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import requests

from tests.gateway import ROOT, Gateway

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie left for init to reap is not running
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_starts_everything_and_a_signal_stops_everything(tmp_path, sig):
    gateway = Gateway(tmp_path / "instance")
    try:
        banner = "\n".join(gateway.output)
        assert f"http://127.0.0.1:{gateway.port}" in banner
        assert "First operator (shown once): admin@switchboard.local / " in banner
        password = banner.split("admin@switchboard.local / ")[1].split()[0]
        for name in ("secret.key", "encryption.key"):
            mode = stat.S_IMODE((tmp_path / "instance" / name).stat().st_mode)
            assert mode == 0o600, f"{name} is {oct(mode)}"
        session = requests.Session()
        page = session.get(gateway.url + "/login")
        token = page.text.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        signed_in = session.post(gateway.url + "/login", data={"csrf_token": token, "email": "admin@switchboard.local", "password": password})
        assert signed_in.url.endswith("/admin/dashboard/")
        children = subprocess.run(["pgrep", "-g", str(gateway.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 5  # up, worker, probe worker, scheduler, usage consumer
        redis_pid = int((tmp_path / "instance" / "redis" / "redis.pid").read_text())
    finally:
        code = gateway.stop(sig)
    assert code == 0, "\n".join(gateway.output)
    # A clean stop says nothing alarming: the relay's follower is stopped before the embedded Redis.
    assert not [line for line in gateway.output if "Traceback" in line or " ERROR " in line], "\n".join(gateway.output)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(int(p)) for p in children + [str(redis_pid)]):
        time.sleep(0.1)
    assert not [p for p in children if _alive(int(p))]
    assert not _alive(redis_pid)
    # A second start reuses the instance: same secrets, no new operator printed.
    again = Gateway(tmp_path / "instance")
    try:
        assert "First operator" not in "\n".join(again.output)
    finally:
        again.stop()


def test_cli_errors_are_one_line_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["SWITCHBOARD_INSTANCE"] = str(tmp_path / "instance")
    subprocess.run([sys.executable, "-m", "controlplane", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    cases = [
        ["topup", "--user", "nobody@example.com", "--usd", "1", "--reason", "x"],
        ["price", "set", "m", "--input", "abc", "--output", "1", "--now"],
        ["price", "set", "m", "--input", "1", "--output", "1"],
        ["channel", "add", "--name", "c", "--type", "nope", "--base-url", "https://x.example", "--keys", "k", "--models", "m"],
        ["channel", "add", "--name", "c", "--type", "openai", "--base-url", "http://169.254.169.254/", "--keys", "k", "--models", "m"],
        ["key", "create"],
        ["user", "create", "--email", "not-an-email"],
    ]
    for args in cases:
        result = subprocess.run([sys.executable, "-m", "controlplane", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_relay_errors_reach_the_log_under_up(tmp_path):
    """The relay's loggers exist before `up` runs the migrations; Alembic's logging setup must not
    silence them (nor replace the process's handlers)."""
    gateway = Gateway(tmp_path / "instance")
    try:
        redis_pid = int((tmp_path / "instance" / "redis" / "redis.pid").read_text())
        os.kill(redis_pid, signal.SIGKILL)  # the relay's snapshot follower loses Redis and says so
        deadline = time.time() + 20
        while time.time() < deadline and not any("ERROR relay.config_store: snapshot follower lost Redis" in line for line in gateway.output):
            time.sleep(0.1)
        assert any("ERROR relay.config_store: snapshot follower lost Redis" in line for line in gateway.output), "\n".join(gateway.output)
        assert any(line.startswith("Traceback") for line in gateway.output)  # with the traceback, in the process's own format
    finally:
        gateway.stop()


def _children(gateway: Gateway) -> dict[int, str]:
    """`up`'s child processes (its process group, without itself) and their command lines."""
    found = {}
    for pid in subprocess.run(["pgrep", "-g", str(gateway.proc.pid)], capture_output=True, text=True).stdout.split():
        if int(pid) == gateway.proc.pid or not _alive(int(pid)):
            continue
        try:
            found[int(pid)] = (ROOT / f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except FileNotFoundError:
            continue
    return found


def _until(condition, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_killed_children_come_back_the_consumer_ingests_and_sigterm_stops_everything(tmp_path):
    import redis

    from relay.usage import USAGE_STREAMS, UsageEvent

    gateway = Gateway(tmp_path / "instance")
    try:
        account = gateway.cli("user", "create", "--email", "ana@example.com")["account_id"]
        gateway.cli("topup", "--user", "ana@example.com", "--usd", "5", "--reason", "e2e funds")
        killed = {name: next(pid for pid, cmd in _children(gateway).items() if cmd.endswith(f" {name} ")) for name in ("ingest", "scheduler")}
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)
        for name, pid in killed.items():
            assert _until(lambda name=name, pid=pid: any(cmd.endswith(f" {name} ") and p != pid for p, cmd in _children(gateway).items()))
        now = time.time()
        event = UsageEvent(request_id="req_after_restart", started_at=now, finished_at=now, endpoint="/v1/chat/completions", status=200,
                           account_id=account, model="gpt-4o-mini", cost=1_234)
        redis.Redis(unix_socket_path=str(tmp_path / "instance" / "redis" / "redis.sock")).xadd(USAGE_STREAMS[0], {"e": event.encode()})
        gateway.wait_for_balance("ana@example.com", 5_000_000 - 1_234)
        assert "ingest (pid" in "\n".join(gateway.output) and "exited with -9; restarting" in "\n".join(gateway.output)
        children = list(_children(gateway))
        redis_pid = int((tmp_path / "instance" / "redis" / "redis.pid").read_text())
        os.kill(gateway.proc.pid, signal.SIGTERM)  # to `up` alone, as a process manager would
        assert gateway.proc.wait(timeout=30) == 0
        assert _until(lambda: not any(_alive(p) for p in [*children, redis_pid]), 15), "\n".join(gateway.output)
    finally:
        gateway.stop()


def _redis_users(instance) -> set[int]:
    """The processes registered with the embedded Redis (holding its users' lock file open)."""
    lock, users = str(instance / "redis" / "users.lock"), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == lock for fd in os.listdir(f"/proc/{pid}/fd")):
                users.add(int(pid))
        except OSError:
            continue
    return users


def test_no_child_outlives_a_killed_up(tmp_path):
    gateway = Gateway(tmp_path / "instance")
    try:
        children = list(_children(gateway))
        assert len(children) == 4  # worker, probe worker, scheduler, usage consumer
        # Each child registers with the embedded Redis itself, so none is left without it.
        assert _until(lambda: _redis_users(tmp_path / "instance") == {gateway.proc.pid, *children})
        redis_pid = int((tmp_path / "instance" / "redis" / "redis.pid").read_text())
        os.kill(gateway.proc.pid, signal.SIGKILL)
        gateway.proc.wait(timeout=10)
        # Each child stops on its own; the last one out shuts the embedded Redis down.
        assert _until(lambda: not any(_alive(p) for p in [*children, redis_pid]), 30), [p for p in children if _alive(p)]
    finally:
        gateway.stop()


def test_the_embedded_redis_killed_under_up_is_started_again_and_the_relay_serves_again(tmp_path):
    """`up` runs the embedded Redis as it runs its children: killed, it is started again from its
    append-only file (the balance it held comes back) and requests are served again."""
    import redis

    gateway = Gateway(tmp_path / "instance")
    folder = tmp_path / "instance" / "redis"
    try:
        account = gateway.cli("user", "create", "--email", "ana@example.com")["account_id"]
        gateway.cli("topup", "--user", "ana@example.com", "--usd", "5", "--reason", "e2e funds")
        secret = gateway.cli("key", "create", "--user", "ana@example.com", "--name", "after")["key"]
        killed = int((folder / "redis.pid").read_text())
        os.kill(killed, signal.SIGKILL)
        assert _until(lambda: not _alive(killed), 10)

        def answers() -> bool:
            try:
                return bool(redis.Redis(unix_socket_path=str(folder / "redis.sock"), socket_timeout=1).ping())
            except redis.RedisError:
                return False

        assert _until(answers, 30), "\n".join(gateway.output[-30:])
        assert int((folder / "redis.pid").read_text()) != killed
        live = redis.Redis(unix_socket_path=str(folder / "redis.sock"))
        assert int(live.hget(f"sb:acct:{account}", "bal")) == 5_000_000  # from the append-only file
        models = requests.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
        assert models.status_code == 200, models.text
    finally:
        gateway.stop()
