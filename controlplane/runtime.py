"""The control plane's live handles (Redis, the credential cipher, live money), one per app."""
from __future__ import annotations

from dataclasses import dataclass

import redis as redis_lib
from flask import current_app

from relay.cipher import Cipher
from relay.quota import Quota


@dataclass
class Runtime:
    settings: object
    redis: redis_lib.Redis
    cipher: Cipher
    quota: Quota

    @classmethod
    def build(cls, settings) -> "Runtime":
        client = redis_lib.Redis.from_url(settings.redis_url, health_check_interval=30)
        return cls(settings=settings, redis=client, cipher=Cipher(settings.encryption_key), quota=Quota(client))


def runtime() -> Runtime:
    return current_app.extensions["switchboard"]
