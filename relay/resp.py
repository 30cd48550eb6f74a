"""A lean Redis client for the relay's per-request scripts: EVALSHA over pooled raw sockets, replies
parsed by hiredis. It skips what redis-py does around every command (retry wrappers, a readiness
poll on each pooled connection) — half the CPU of the hold and settle round trips on this machine.

Only the scripts go through here; everything else (pub/sub, XADD of refusals) keeps redis-py.
"""
from __future__ import annotations

import hashlib
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from gevent.lock import BoundedSemaphore
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from relay.metrics import COUNTERS
from relay.sockets import send_all


def encode(*parts: Any) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        kind = type(part)
        data = part if kind is bytes else part.encode() if kind is str else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


Connection = tuple[socket.socket, Any]  # the socket and its hiredis reader


class RespPool:
    """Connections to one Redis (redis://, unix://), each with its own hiredis reader."""

    def __init__(self, url: str, size: int = 64, timeout: float = 10.0):
        self.url = url
        self.size = size
        self.timeout = timeout
        self.idle: deque[Connection] = deque()
        # At most `size` connections in use: callers beyond that wait their turn instead of opening
        # (and closing) a connection each. gevent's own semaphore: the patched threading one costs
        # a Condition and two lock operations per acquire.
        self.slots = BoundedSemaphore(size)
        parts = urlsplit(url)
        self.unix = parts.path if parts.scheme == "unix" else None
        self.address = None if self.unix else (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.db = (int(parts.path.strip("/") or 0) if parts.scheme != "unix"
                   else int(dict(q.split("=") for q in parts.query.split("&") if "=" in q).get("db", 0)))
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None

    def _connect(self) -> Connection:
        try:
            if self.unix:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self.unix)
            else:
                sock = socket.create_connection(self.address, timeout=self.timeout)  # type: ignore[arg-type]  # set when unix is not
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as error:
            raise RedisConnectionError(f"cannot connect to Redis: {error}") from None
        conn = (sock, hiredis.Reader())
        setup = []
        if self.password:
            setup.append(encode("AUTH", self.username, self.password) if self.username else encode("AUTH", self.password))
        if self.db:
            setup.append(encode("SELECT", self.db))
        for command in setup:
            reply = self._round_trip(conn, command)
            if isinstance(reply, hiredis.ReplyError):
                raise ResponseError(str(reply))
        return conn

    def _round_trip(self, conn: Connection, payload: bytes) -> Any:
        sock, reader = conn
        send_all(sock, payload)
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            reader.feed(data)

    def execute(self, payload: bytes) -> Any:
        """Send one encoded command and return its reply (a ReplyError is returned, not raised)."""
        with self.slots:
            conn = self.idle.pop() if self.idle else self._connect()
            COUNTERS.redis_round_trips += 1
            try:
                reply = self._round_trip(conn, payload)
            except OSError as error:
                try:
                    conn[0].close()
                except OSError:
                    pass
                raise RedisConnectionError(f"Redis connection lost: {error}") from None
            self.idle.append(conn)
            return reply


class Script:
    """Same call shape as redis-py's registered scripts: `script(keys=[...], args=[...])`."""

    def __init__(self, pool: RespPool, text: str):
        self.pool = pool
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        reply = self.pool.execute(encode("EVALSHA", self.sha, len(keys), *keys, *args))
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            # First use on this Redis (or after SCRIPT FLUSH / a restart): EVAL loads it.
            reply = self.pool.execute(encode("EVAL", self.text, len(keys), *keys, *args))
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply
