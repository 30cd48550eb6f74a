"""The control plane's live handles (Redis, the credential cipher, live money), one per app."""
from __future__ import annotations

from dataclasses import dataclass

import redis as redis_lib
from flask import current_app

from relay.cipher import Cipher
from relay.egress import Egress, EgressPolicy, Resolver
from relay.quota import Quota
from relay.redis_connect import redis_py_client


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

    def egress(self, customer: bool = False) -> Egress:
        """The guard for outbound connections (relay/egress.py). Customer-supplied URLs reach public
        addresses only; channels and the operator's own alert webhook also the ranges the operator
        opened with SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS."""
        allow = self.customer_allow if customer else self.settings.relay_settings().egress_allow
        return Egress(EgressPolicy(allow), self.resolver)

    @classmethod
    def build(cls, settings) -> "Runtime":
        client = redis_py_client(settings.redis_url, health_check_interval=30)
        return cls(settings=settings, redis=client, cipher=Cipher(settings.encryption_key), quota=Quota(client))


def runtime() -> Runtime:
    return current_app.extensions["switchboard"]
