"""Process counters the relay exposes on /healthz: requests served and Redis round trips made.

Round trips are counted where they happen (each packed send to Redis is one; a pipeline is one), so
the benchmark reports measured round trips per request, not an estimate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis


@dataclass
class Counters:
    requests: int = 0
    redis_round_trips: int = 0


COUNTERS = Counters()  # one per process: the relay is one process per core


class _CountingMixin:
    def send_packed_command(self, command: Any, check_health: bool = True) -> Any:
        COUNTERS.redis_round_trips += 1
        return super().send_packed_command(command, check_health)  # type: ignore[misc]  # mixed into a redis-py Connection class


def counting_redis(url: str, max_connections: int = 64, **kwargs: Any) -> Redis[bytes]:
    """A redis client whose connections count round trips into COUNTERS.

    The pool blocks when all its connections are busy: thousands of greenlets share a few dozen
    connections instead of opening one each (and failing with "Too many connections").
    """
    import redis

    from relay.redis_connect import parse, redis_py_cluster, redis_py_pool

    target = parse(url)
    if target.cluster:
        # redis-py's cluster client keeps a pool per node: its round trips are not counted.
        client: Redis[bytes] = redis_py_cluster(target, max_connections=max_connections, **kwargs)
        return client
    pool = redis_py_pool(target, blocking=True, max_connections=max_connections, **kwargs)
    base = pool.connection_class
    pool.connection_class = type(f"Counting{base.__name__}", (_CountingMixin, base), {})
    return redis.Redis(connection_pool=pool)
