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

import gevent
import hiredis
from gevent.lock import BoundedSemaphore
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from relay.metrics import COUNTERS
from relay.redis_connect import Address, RedisTarget, open_socket, parse
from relay.sockets import peer_closed, send_all

# Replies of a Redis that refuses every command for now: loading its data after a restart, or a
# replica whose master is gone. redis-py raises its ConnectionError subclasses for them too.
NOT_SERVING = ("LOADING", "MASTERDOWN")


class ReplyLost(RedisConnectionError):
    """The command was sent and the connection failed before its reply came: Redis may have run it."""


def encode(*parts: Any) -> bytes:
    """A command in RESP: an array of bulk strings. hiredis packs str, bytes, int and float (floats
    as `repr` writes them, as str() does) in C, about twice as fast as Python for a batch's hundreds
    of arguments; anything else is packed as its str(), as before."""
    try:
        packed: bytes = hiredis.pack_command(parts)
        return packed
    except TypeError:
        return _encode(parts)


def _encode(parts: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        kind = type(part)
        data = part if kind is bytes else part.encode() if kind is str else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


Connection = tuple[socket.socket, Any, int]  # the socket, its hiredis reader, the pool's generation


class RespPool:
    """Connections to one Redis (any URL relay/redis_connect.py reads: TCP, TLS, a unix socket, or the
    master of a Sentinel-monitored service), each with its own hiredis reader."""

    def __init__(self, url: str, size: int = 64, timeout: float = 10.0, target: RedisTarget | None = None):
        self.url = url
        self.size = size
        self.timeout = timeout
        self.target = target or parse(url)
        self.idle: deque[Connection] = deque()
        # At most `size` connections in use: callers beyond that wait their turn instead of opening
        # (and closing) a connection each. gevent's own semaphore: the patched threading one costs
        # a Condition and two lock operations per acquire.
        self.slots = BoundedSemaphore(size)
        # Under Sentinel: the master the sentinels last named (None: ask them), and a generation that
        # changes when it does, so connections to the old one are closed instead of pooled again.
        self.master: Address | None = None
        self.generation = 0

    def _address(self) -> Address | None:
        if not self.target.sentinel:
            return None
        if self.master is None:
            self.master = master_address(self.target, self.timeout)
        return self.master

    def forget_master(self) -> None:
        """The master failed us (gone, or demoted): ask the sentinels again, drop pooled connections."""
        self.master = None
        self.generation += 1
        while self.idle:
            try:
                self.idle.pop()[0].close()
            except OSError:
                pass

    def _connect(self) -> Connection:
        try:
            sock = open_socket(self.target, self._address(), self.timeout)
        except OSError as error:
            if self.target.sentinel:
                self.forget_master()
            raise RedisConnectionError(f"cannot connect to Redis: {error}") from None
        conn = (sock, hiredis.Reader(), self.generation)
        setup = []
        target = self.target
        if target.password:
            setup.append(encode("AUTH", target.username, target.password) if target.username else encode("AUTH", target.password))
        if target.db:
            setup.append(encode("SELECT", target.db))
        if target.sentinel:
            setup.append(encode("ROLE"))  # a sentinel's answer may be stale: the node must say it is the master
        try:
            for command in setup:
                reply = self._round_trip(conn, command)
                if isinstance(reply, hiredis.ReplyError):
                    raise ResponseError(str(reply))
        except (OSError, ResponseError) as error:
            sock.close()
            if target.sentinel:
                self.forget_master()
            raise RedisConnectionError(f"cannot set up the Redis connection: {error}") from None
        if target.sentinel and reply[0] != b"master":
            sock.close()
            named = self.master
            self.forget_master()
            raise RedisConnectionError(f"{named} is not the master of {target.service} (yet: a failover is under way)")
        return conn

    def _round_trip(self, conn: Connection, payload: bytes) -> Any:
        sock, reader, _ = conn
        send_all(sock, payload)
        return self._reply(sock, reader)

    @staticmethod
    def _reply(sock: socket.socket, reader: Any) -> Any:
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            reader.feed(data)

    def node_of(self, key: Any) -> Address | None:
        """Which server `key` lives on: one server has one (None)."""
        return None

    def execute(self, payload: bytes, key: Any = None, asking: bool = False) -> Any:
        """Send one encoded command and return its reply (a ReplyError is returned, not raised).
        `key` (its first key) is for a cluster's routing (ClusterPool); `asking` sends ASKING first,
        as a cluster node redirecting with ASK wants, and returns the command's reply."""
        with self.slots:
            if asking:
                asked = self._execute(encode("ASKING") + payload, replies=2)
                return asked[1] if not isinstance(asked[0], hiredis.ReplyError) else asked[0]
            reply = self._execute(payload)
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("READONLY") and self.target.sentinel:
                # The node was demoted in a failover; a write it refuses has not happened, so it is
                # sent again to the master the sentinels name now.
                self.forget_master()
                reply = self._execute(payload)
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith(NOT_SERVING):
                # Nothing ran: to the caller this is a Redis that is not there yet (503, the settle journaled).
                raise RedisConnectionError(f"Redis is not serving yet: {reply}")
            return reply

    def execute_many(self, commands: Sequence[tuple[bytes, Any]]) -> list[Any]:
        """Several encoded commands (each with its first key, unused here) pipelined: one write, their
        replies in order (a ReplyError is returned, not raised). Redis reads them in one go, which
        is what makes this cheaper for it than as many round trips. A command Redis was not serving
        for, or the whole pipeline when the connection failed, is an exception in its place."""
        if len(commands) == 1:
            try:
                return [self.execute(commands[0][0])]
            except RedisConnectionError as error:
                return [error]
        with self.slots:
            try:
                replies = self._execute(b"".join(payload for payload, _ in commands), replies=len(commands))
            except RedisConnectionError as error:
                return [type(error)(*error.args) for _ in commands]
        return [RedisConnectionError(f"Redis is not serving yet: {r}") if isinstance(r, hiredis.ReplyError) and str(r).startswith(NOT_SERVING)
                else r for r in replies]

    def _pooled(self) -> Connection:
        if not self.target.sentinel:
            return self.idle.pop() if self.idle else self._connect()
        # A sentinel's failover closes every client of the demoted master. A command sent on such a
        # connection may have been lost or run, nobody can tell; so each pooled connection is first
        # checked (one non-blocking peek) and a closed one means: ask the sentinels again.
        while self.idle:
            conn = self.idle.pop()
            if not peer_closed(conn[0]):
                return conn
            conn[0].close()
            self.forget_master()
        return self._connect()

    def _execute(self, payload: bytes, replies: int = 1) -> Any:
        conn = self._pooled()
        COUNTERS.redis_round_trips += 1
        sent = False
        try:
            send_all(conn[0], payload)
            sent = True
            reply = self._reply(conn[0], conn[1]) if replies == 1 else [self._reply(conn[0], conn[1]) for _ in range(replies)]
        except OSError as error:
            try:
                conn[0].close()
            except OSError:
                pass
            if self.target.sentinel:
                self.forget_master()
            if sent:
                raise ReplyLost(f"Redis connection lost before the reply: {error}") from None
            raise RedisConnectionError(f"Redis connection lost: {error}") from None
        if conn[2] == self.generation:
            self.idle.append(conn)
        else:
            conn[0].close()
        return reply


class ClusterPool:
    """Connections to a Redis Cluster: a RespPool per master, each command sent to the master that
    serves its first key's slot. The slot map comes from `CLUSTER SLOTS` (asked of any node known);
    a MOVED reply (the slot lives elsewhere now: a resharding or a failover) updates it and the
    command goes again, to the right node; ASK (a slot half-way through a migration) sends it once to
    the node named, after ASKING. A refused connection means the map may be stale: it is asked for
    again and the command, which never left, is sent again (a few times, while a replica takes over).
    A connection that failed after the command went out is a lost reply, as on one Redis."""

    REDIRECTS = 5
    RECONNECTS = 3

    def __init__(self, url: str, size: int = 64, timeout: float = 10.0):
        self.url = url
        self.size = size
        self.timeout = timeout
        self.target = parse(url)
        self.pools: dict[Address, RespPool] = {}
        self.slots: list[Address | None] = [None] * 16384
        self.mapped = False

    def _pool(self, address: Address) -> RespPool:
        pool = self.pools.get(address)
        if pool is None:
            pool = self.pools[address] = RespPool("", self.size, self.timeout, self.target.node(address))
        return pool

    def refresh(self) -> None:
        """Learn the slot map from the first node that answers (the seeds, then every node seen)."""
        errors = []
        for address in dict.fromkeys([*self.target.cluster_nodes, *self.pools]):
            try:
                reply = self._pool(address).execute(encode("CLUSTER", "SLOTS"))
            except RedisConnectionError as error:
                errors.append(f"{address[0]}:{address[1]}: {error}")
                continue
            if isinstance(reply, hiredis.ReplyError):
                errors.append(f"{address[0]}:{address[1]}: {reply}")
                continue
            slots: list[Address | None] = [None] * 16384
            for start, end, master, *_ in reply:
                node = ((master[0].decode() or address[0]), int(master[1]))
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = node
            self.slots, self.mapped = slots, True
            return
        raise RedisConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS: {'; '.join(errors)}")

    def execute(self, payload: bytes, key: Any = None) -> Any:
        """As RespPool.execute, on the master serving `key`'s slot (any master when None)."""
        slot = key_slot_of(key)
        if not self.mapped:
            self.refresh()
        address = self.slots[slot]
        asked = False
        reconnects = 0
        for _ in range(self.REDIRECTS + self.RECONNECTS):
            if address is None:
                self.refresh()
                address = self.slots[slot]
                if address is None:
                    raise RedisConnectionError(f"no Redis Cluster node serves slot {slot}")
            try:
                reply = self._pool(address).execute(payload, asking=asked)
            except ReplyLost:
                self.mapped = False  # whatever happened to that node, the next command asks first
                raise
            except RedisConnectionError:
                reconnects += 1
                if reconnects > self.RECONNECTS:
                    raise
                gevent.sleep(0.1 * reconnects)
                self.mapped = False
                self.refresh()
                address, asked = self.slots[slot], False
                continue
            if not isinstance(reply, hiredis.ReplyError):
                return reply
            message = str(reply)
            if message.startswith(("MOVED ", "ASK ")):
                kind, moved_slot, where = message.split()
                host, _, port = where.rpartition(":")
                address = (host or (address[0] if address else "127.0.0.1"), int(port))
                if kind == "MOVED":
                    self.slots[int(moved_slot)] = address
                    asked = False
                else:
                    asked = True
                continue
            if message.startswith("TRYAGAIN"):
                gevent.sleep(0.05)
                continue
            if message.startswith("CLUSTERDOWN"):
                raise RedisConnectionError(f"the Redis Cluster is not serving: {message}")
            return reply
        raise RedisConnectionError(f"Redis Cluster kept redirecting slot {slot}")

    def node_of(self, key: Any) -> Address | None:
        """The master serving `key`'s slot as the map says now (None before the map is read)."""
        return self.slots[key_slot_of(key)]

    def execute_many(self, commands: Sequence[tuple[bytes, Any]], rereads: int = 2) -> list[Any]:
        """As RespPool.execute_many, each command on the master serving its key's slot: the commands
        of one master go in one pipeline. One redirected (MOVED, ASK, TRYAGAIN) did not run: it goes
        again alone through `execute`, which follows the cluster. Those of a master that could not
        be reached (nothing was sent) go again if the slot map, read once more, names another master
        for them, and otherwise fail at once: the commands of other masters in the same call (other
        accounts' money) must not wait out a failover with them, as they would behind `execute`'s
        reconnects."""
        if not self.mapped:
            self.refresh()
        by_node: dict[Address | None, list[int]] = {}
        for i, (_, key) in enumerate(commands):
            by_node.setdefault(self.slots[key_slot_of(key)], []).append(i)
        out: list[Any] = [None] * len(commands)
        redirected: list[int] = []
        unreachable: list[int] = []
        for address, indexes in by_node.items():
            replies: list[Any] = [_NOT_SENT] * len(indexes) if address is None else self._pool(address).execute_many([commands[i] for i in indexes])
            for i, reply in zip(indexes, replies, strict=True):
                if isinstance(reply, ReplyLost):
                    self.mapped = False  # whatever happened to that node, the next command asks first
                    out[i] = reply
                elif reply is _NOT_SENT or isinstance(reply, RedisConnectionError):
                    unreachable.append(i)
                elif isinstance(reply, hiredis.ReplyError) and str(reply).startswith(_REDIRECTED):
                    redirected.append(i)
                else:
                    out[i] = reply
        for i in redirected:
            try:
                out[i] = self.execute(*commands[i])
            except RedisConnectionError as error:
                out[i] = error
        if unreachable:
            self._reroute(commands, unreachable, out, rereads)
        return out

    def _reroute(self, commands: Sequence[tuple[bytes, Any]], indexes: list[int], out: list[Any], rereads: int) -> None:
        before = {i: self.slots[key_slot_of(commands[i][1])] for i in indexes}
        try:
            if rereads <= 0:
                raise RedisConnectionError("the slot map kept naming masters that cannot be reached")
            self.mapped = False
            self.refresh()
        except RedisConnectionError as error:
            for i in indexes:
                out[i] = RedisConnectionError(f"not sent: {error}")
            return
        moved = [i for i in indexes if self.slots[key_slot_of(commands[i][1])] not in (None, before[i])]
        for i in indexes:
            if i not in moved:
                out[i] = RedisConnectionError(f"not sent: the master of its slot ({before[i]}) cannot be reached")
        if moved:
            for i, reply in zip(moved, self.execute_many([commands[i] for i in moved], rereads - 1), strict=True):
                out[i] = reply


_TAG_SLOTS: dict[str, int] = {}  # a hash tag's slot: the per-request names have a few tags, hashed once each
_TAG_SLOTS_MAX = 65_536  # a user's or a queue's tag each: the cache starts over past this many


def key_slot_of(key: Any) -> int:
    """The cluster slot of a key (str or bytes); slot 0 for a command without one."""
    if key is None:
        return 0
    if not isinstance(key, str):
        return key_slot(key)
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    if end <= start + 1:  # no tag, or an empty one (`{}`): the whole name is hashed
        return key_slot(key.encode())
    tag = key[start + 1:end]
    slot = _TAG_SLOTS.get(tag)
    if slot is None:
        if len(_TAG_SLOTS) >= _TAG_SLOTS_MAX:
            _TAG_SLOTS.clear()
        slot = _TAG_SLOTS[tag] = key_slot(tag.encode())
    return slot


# Replies of a cluster node that mean the command did not run there, and `execute` knows what to do.
_REDIRECTED = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")
_NOT_SENT = object()


def connect_pool(url: str, size: int = 64, timeout: float = 10.0) -> RespPool | ClusterPool:
    """The lean client's pool for any Redis URL: a cluster's, or one server's (Sentinel included)."""
    return ClusterPool(url, size, timeout) if parse(url).cluster else RespPool(url, size, timeout)


def master_address(target: RedisTarget, timeout: float) -> Address:
    """The master's address as the first sentinel that answers names it."""
    errors = []
    for address in target.sentinels:
        try:
            sock = open_socket(RedisTarget(host=address[0], port=address[1], tls=target.tls), None, timeout)
        except OSError as error:
            errors.append(f"{address[0]}:{address[1]}: {error}")
            continue
        try:
            reader = hiredis.Reader()
            commands = []
            if target.sentinel_password:
                commands.append(encode("AUTH", *([target.sentinel_username] if target.sentinel_username else []), target.sentinel_password))
            commands.append(encode("SENTINEL", "get-master-addr-by-name", target.service))
            send_all(sock, b"".join(commands))
            replies: list[Any] = []
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is False:
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionResetError("the sentinel closed the connection")
                    reader.feed(data)
                else:
                    replies.append(reply)
            found = replies[-1]
            if isinstance(found, list) and len(found) == 2:
                return found[0].decode(), int(found[1])
            errors.append(f"{address[0]}:{address[1]}: {found!r}")
        except OSError as error:
            errors.append(f"{address[0]}:{address[1]}: {error}")
        finally:
            sock.close()
    raise RedisConnectionError(f"no sentinel named a master for {target.service}: {'; '.join(errors)}")


class Script:
    """Same call shape as redis-py's registered scripts: `script(keys=[...], args=[...])`."""

    def __init__(self, pool: RespPool | ClusterPool, text: str):
        self.pool = pool
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()  # the name Redis gives a script

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        first = keys[0] if keys else None
        reply = self.pool.execute(encode("EVALSHA", self.sha, len(keys), *keys, *args), first)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            # First use on this Redis (or node, or after SCRIPT FLUSH / a restart): EVAL loads it.
            reply = self.pool.execute(encode("EVAL", self.text, len(keys), *keys, *args), first)
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    def node_of(self, key: Any) -> Any:
        return self.pool.node_of(key)

    def many(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Several calls of (keys, args), each on its own keys' node, pipelined per node
        (`execute_many`): their replies in order, an exception (not raised) in place of a call that
        failed."""
        commands = [(encode("EVALSHA", self.sha, len(keys), *keys, *args), keys[0] if keys else None) for keys, args in calls]
        replies = self.pool.execute_many(commands)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")]
        if unknown:
            # First use on those nodes: EVAL loads it, pipelined likewise.
            loads = [(encode("EVAL", self.text, len(calls[i][0]), *calls[i][0], *calls[i][1]), commands[i][1]) for i in unknown]
            for i, reply in zip(unknown, self.pool.execute_many(loads), strict=True):
                replies[i] = reply
        return [ResponseError(str(reply)) if isinstance(reply, hiredis.ReplyError) else reply for reply in replies]
