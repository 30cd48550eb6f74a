"""Where Redis is and how to reach it: one URL read the same way by the relay's lean RESP client
(relay/resp.py) and by every redis-py client (relay/metrics.py, controlplane/runtime.py).

    redis://[[user]:password@]host[:port][/db]
    rediss://…                      TLS (the options below)
    unix:///path/to/redis.sock[?db=N]
    redis-sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]
    rediss-sentinel://…             Sentinel, TLS to the sentinels and to the master
    redis-cluster://[[user]:password@]host[:port][,host[:port]…]
    rediss-cluster://…              Redis Cluster (any of its nodes; the rest are found), TLS

TLS options, as URL query parameters (redis-py's names) or, when the URL names none, environment
variables: `ssl_ca_certs` / SWITCHBOARD_REDIS_CA (the CA bundle to trust; default: the system's),
`ssl_certfile` / SWITCHBOARD_REDIS_CERT and `ssl_keyfile` / SWITCHBOARD_REDIS_KEY (a client
certificate, for servers with `tls-auth-clients yes`), `ssl_cert_reqs` (required | none) and
`ssl_check_hostname` (true | false).

Sentinel: user and password are the master's; `sentinel_username` / `sentinel_password` query
parameters (or SWITCHBOARD_REDIS_SENTINEL_PASSWORD) authenticate to the sentinels. Clients ask the
sentinels which node is the master and ask again whenever a connection fails or the node they
reach answers READONLY (it was demoted in a failover).
"""
from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from redis import Redis

Address = tuple[str, int]
SENTINEL_PORT = 26379
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class Tls:
    ca: str | None = None  # None: the system's trust store
    cert: str | None = None
    key: str | None = None
    verify: bool = True
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context.check_hostname = self.check_hostname
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context

    def redis_py(self) -> dict[str, Any]:
        return {"ssl_ca_certs": self.ca, "ssl_certfile": self.cert, "ssl_keyfile": self.key,
                "ssl_cert_reqs": "required" if self.verify else "none", "ssl_check_hostname": self.verify and self.check_hostname}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed Redis URL: one server (TCP or a unix socket), or a Sentinel-monitored service."""

    host: str = "127.0.0.1"
    port: int = 6379
    unix: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: Tls | None = None
    sentinels: tuple[Address, ...] = ()
    service: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    cluster_nodes: tuple[Address, ...] = ()  # Redis Cluster: where to learn the slot map

    @property
    def sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def cluster(self) -> bool:
        return bool(self.cluster_nodes)

    def node(self, address: Address) -> RedisTarget:
        """One cluster node, reached as this target says (TLS, credentials)."""
        return RedisTarget(host=address[0], port=address[1], username=self.username, password=self.password, tls=self.tls)


def _hostport(text: str, default_port: int) -> Address:
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = text.rpartition(":")
    return (host, int(port)) if sep else (text, default_port)


def _tls(query: dict[str, str], env: Mapping[str, str]) -> Tls:
    return Tls(ca=query.get("ssl_ca_certs") or env.get("SWITCHBOARD_REDIS_CA") or None,
               cert=query.get("ssl_certfile") or env.get("SWITCHBOARD_REDIS_CERT") or None,
               key=query.get("ssl_keyfile") or env.get("SWITCHBOARD_REDIS_KEY") or None,
               verify=query.get("ssl_cert_reqs", "required").lower() != "none",
               check_hostname=query.get("ssl_check_hostname", "true").lower() in _TRUE)


def parse(url: str, env: Mapping[str, str] | None = None) -> RedisTarget:
    env = os.environ if env is None else env
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items() if v}
    scheme = parts.scheme.lower()
    if scheme == "unix":
        return RedisTarget(unix=parts.path, db=int(query.get("db", "0")),
                           username=unquote(parts.username) if parts.username else None,
                           password=unquote(parts.password) if parts.password else None)
    # The netloc by hand: a Sentinel URL lists several hosts, which urlsplit's .port refuses.
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    username, secret = (unquote(user) or None), (unquote(password) or None)
    tls = _tls(query, env) if scheme in ("rediss", "rediss-sentinel", "rediss-cluster") else None
    if scheme in ("redis-cluster", "rediss-cluster"):
        nodes = tuple(_hostport(h, 6379) for h in hosts.split(",") if h)
        if not nodes:
            raise ValueError("a Cluster URL names at least one node: redis-cluster://host:port[,host:port…]")
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("Redis Cluster has one database, 0: a Cluster URL names none")
        return RedisTarget(host=nodes[0][0], port=nodes[0][1], username=username, password=secret, tls=tls, cluster_nodes=nodes)
    if scheme in ("redis-sentinel", "rediss-sentinel"):
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("a Sentinel URL names the service: redis-sentinel://host:26379/<service>")
        return RedisTarget(db=int(path[1]) if len(path) > 1 else 0, username=username, password=secret, tls=tls,
                           sentinels=tuple(_hostport(h, SENTINEL_PORT) for h in hosts.split(",") if h),
                           service=unquote(path[0]), sentinel_username=query.get("sentinel_username"),
                           sentinel_password=query.get("sentinel_password") or env.get("SWITCHBOARD_REDIS_SENTINEL_PASSWORD") or None)
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
    host, port = _hostport(hosts, 6379) if hosts else ("127.0.0.1", 6379)
    return RedisTarget(host=host or "127.0.0.1", port=port, db=int(parts.path.strip("/") or query.get("db", "0")),
                       username=username, password=secret, tls=tls)


# --- plain sockets (the lean client) ------------------------------------------------------------------
def open_socket(target: RedisTarget, address: Address | None, timeout: float) -> socket.socket:
    """A connected socket to `address` (the server's, or the master a sentinel named), TLS when the
    target says so; the unix socket when it names one."""
    if target.unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(target.unix)
        return sock
    host, port = address or (target.host, target.port)
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if target.tls is not None:
        try:
            return _context(target.tls).wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
    return sock


_CONTEXTS: dict[Tls, ssl.SSLContext] = {}


def _context(tls: Tls) -> ssl.SSLContext:
    """One context per option set: loading a CA bundle costs milliseconds, a handshake need not."""
    context = _CONTEXTS.get(tls)
    if context is None:
        context = _CONTEXTS[tls] = tls.context()
    return context


# --- redis-py ----------------------------------------------------------------------------------------------
def _auth(target: RedisTarget) -> dict[str, Any]:
    return {"db": target.db, "username": target.username, "password": target.password}


def redis_py_pool(target: RedisTarget, *, blocking: bool = False, max_connections: int | None = None,
                  **kwargs: Any) -> Any:
    """A redis-py connection pool for `target`: Sentinel-managed (it finds the master on every new
    connection and drops connections to a demoted one), or to the one server."""
    import redis
    import redis.sentinel

    tls = target.tls.redis_py() if target.tls is not None else {}
    if target.sentinel:
        sentinel_kwargs = {"username": target.sentinel_username, "password": target.sentinel_password,
                           "socket_timeout": kwargs.get("socket_timeout", 5.0), **({"ssl": True, **tls} if tls else {})}
        manager = redis.sentinel.Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
        # redis-py has no blocking Sentinel pool: the cap is dropped rather than refusing callers.
        kwargs.pop("timeout", None)
        return redis.sentinel.SentinelConnectionPool(target.service, manager, **_auth(target),
                                                     **({"ssl": True, **tls} if tls else {}), **kwargs)
    pool_class: Any = redis.BlockingConnectionPool if blocking else redis.ConnectionPool
    if blocking:
        kwargs.setdefault("timeout", 10)
    if target.unix:
        return pool_class(connection_class=redis.UnixDomainSocketConnection, path=target.unix, max_connections=max_connections,
                          **_auth(target), **kwargs)
    connection_class = redis.SSLConnection if target.tls is not None else redis.Connection
    return pool_class(connection_class=connection_class, host=target.host, port=target.port, max_connections=max_connections,
                      **_auth(target), **tls, **kwargs)


_RECOVERING: Any = None


def _recovering_cluster() -> Any:
    """redis-py's cluster client, made to read the slot map again after a connection error. redis-py
    finds the keys of a command like XREADGROUP by asking a node (COMMAND GETKEYS); with that node's
    master killed, the error came before redis-py's own refresh, and the usage consumer asked the
    dead node for ever while its replica served (tests/integration/test_redis_cluster.py)."""
    global _RECOVERING
    if _RECOVERING is None:
        from redis.cluster import RedisCluster
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        class RecoveringCluster(RedisCluster):  # type: ignore[type-arg]
            def execute_command(self, *args: Any, **kwargs: Any) -> Any:
                try:
                    return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
                except (RedisConnectionError, RedisTimeoutError):
                    reread_slot_map(self)
                    raise

        _RECOVERING = RecoveringCluster
    return _RECOVERING


def reread_slot_map(client: Any) -> None:
    """Under a cluster, read the slot map again after a connection error (nothing elsewhere). A
    pub/sub connection does not go through `execute_command`: with the master of its channel's slot
    killed, a new subscription would go to the dead node for ever while its replica served."""
    from redis.exceptions import RedisError

    manager = getattr(client, "nodes_manager", None)
    if manager is None:
        return
    try:
        manager.initialize()
    except RedisError:
        pass  # no node answers yet: the next error tries again


def redis_py_cluster(target: RedisTarget, **kwargs: Any) -> Any:
    """redis-py's cluster client: it learns the slot map from the nodes named and follows MOVED/ASK."""
    from redis.cluster import ClusterNode

    RedisCluster = _recovering_cluster()
    tls = {"ssl": True, **target.tls.redis_py()} if target.tls is not None else {}
    for unsupported in ("health_check_interval", "timeout"):
        kwargs.pop(unsupported, None)
    max_connections = kwargs.pop("max_connections", None)
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in target.cluster_nodes],
                        username=target.username, password=target.password, **tls,
                        **({"max_connections": max_connections} if max_connections else {}), **kwargs)


def redis_py_client(url: str, **kwargs: Any) -> Redis[bytes]:
    """A redis-py client for a Switchboard Redis URL (any of the forms above)."""
    import redis

    target = parse(url)
    if target.cluster:
        client: Redis[bytes] = redis_py_cluster(target, **kwargs)
        return client
    return redis.Redis(connection_pool=redis_py_pool(target, **kwargs))
