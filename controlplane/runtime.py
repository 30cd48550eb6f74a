"""The control plane's live handles (Redis, the credential cipher, live money), one per app."""
from __future__ import annotations

from dataclasses import dataclass

import redis as redis_lib
from flask import current_app

from relay.cipher import Cipher
from relay.egress import Egress, EgressPolicy, Resolver
from relay.quota import Quota
from relay.redis_connect import parse, redis_py_client


@dataclass
class Runtime:
    settings: object
    redis: redis_lib.Redis
    cipher: Cipher
    quota: Quota
    resolver: Resolver | None = None  # None: the system's; tests answer names themselves
    # No setting reaches this: customers' URLs get public addresses only. Tests whose receiver
    # listens on loopback open it here, explicitly.
    customer_allow: tuple = ()
    queue: redis_lib.Redis | None = None  # RQ's Redis, when it is not `redis` (see `queue_redis`)

    def egress(self, customer: bool = False) -> Egress:
        """The guard for outbound connections (relay/egress.py). Customer-supplied URLs reach public
        addresses only; channels and the operator's own alert webhook also the ranges the operator
        opened with SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS."""
        allow = self.customer_allow if customer else self.settings.relay_settings().egress_allow
        return Egress(EgressPolicy(allow), self.resolver)

    @property
    def queue_redis(self) -> redis_lib.Redis:
        """Where RQ keeps its jobs. RQ's commands span many keys of its own naming, which a Redis
        Cluster refuses: under a cluster REDIS_URL, SWITCHBOARD_QUEUE_REDIS_URL names one server."""
        if self.queue is not None:
            return self.queue
        if self.settings.queue_redis_url:
            self.queue = redis_py_client(self.settings.queue_redis_url, health_check_interval=30)
            return self.queue
        if self.settings.redis_url and parse(self.settings.redis_url).cluster:
            raise RuntimeError("RQ cannot use a Redis Cluster: set SWITCHBOARD_QUEUE_REDIS_URL to one Redis server for its jobs")
        return self.redis

    @classmethod
    def build(cls, settings) -> "Runtime":
        client = redis_py_client(settings.redis_url, health_check_interval=30)
        return cls(settings=settings, redis=client, cipher=Cipher(settings.encryption_key), quota=Quota(client))


def runtime() -> Runtime:
    return current_app.extensions["switchboard"]
