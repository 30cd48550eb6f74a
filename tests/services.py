"""Access to the real PostgreSQL and Redis for tests, isolated per test session.

Each session takes a Redis database index of its own (a lock file per index) and creates a
PostgreSQL database of its own, so parallel runs on one machine never share state.
"""
from __future__ import annotations

import fcntl
import os
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

REQUIRE = os.environ.get("SWITCHBOARD_TEST_REQUIRE_SERVICES") == "1"
REDIS_BASE = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379")
POSTGRES_BASE = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SLOT_WAIT_SECONDS = 90.0  # under the per-test timeout (pyproject), which covers fixture setup


def unavailable(what: str, error: Exception):
    message = f"{what} is not reachable ({error})"
    if REQUIRE:
        pytest.fail(message)
    pytest.skip(message)


class RedisSlot:
    """An exclusive Redis database index (1–15) for this process."""

    def __init__(self, wait: float = SLOT_WAIT_SECONDS):
        import redis

        self.fd = None
        # Each pytest-xdist worker is a session of its own and takes a slot: when other runs hold all
        # fifteen, wait for one to end rather than fail.
        deadline = time.monotonic() + wait
        while self.fd is None:
            self._take()
            if self.fd is None:
                if time.monotonic() >= deadline:
                    raise RuntimeError("all Redis test databases are taken by other test runs")
                time.sleep(0.5)
        self.url = f"{REDIS_BASE.rstrip('/')}/{self.index}"
        self.client = redis.Redis.from_url(self.url)
        self.client.ping()
        self.client.flushdb()

    def _take(self) -> None:
        for index in range(1, 16):
            fd = os.open(f"/tmp/switchboard-test-redis-{index}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.index = fd, index
            return

    def release(self):
        try:
            self.client.flushdb()
        finally:
            os.close(self.fd)


class PostgresDatabase:
    """A throwaway PostgreSQL database for this session."""

    def __init__(self):
        import psycopg

        self.admin_url = POSTGRES_BASE
        self.name = "sbtest_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        parts = urlsplit(self.admin_url)
        self.url = urlunsplit(parts._replace(path="/" + self.name))

    @property
    def sqlalchemy_url(self) -> str:
        return "postgresql+psycopg://" + self.url.split("://", 1)[1]

    def drop(self):
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
