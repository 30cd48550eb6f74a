"""The operator's endpoints shared by the relay and the control plane: who may read `/metrics`, the
Prometheus exposition, and the shape of a `/readyz` answer.

`/metrics` is for the monitoring system, not the public: with SWITCHBOARD_METRICS_TOKEN set it needs
`Authorization: Bearer <token>` from anywhere; without one it answers only clients in
SWITCHBOARD_METRICS_NETWORKS (default loopback), judged on the client address after trusted proxies,
so a request relayed by the front proxy for an outside client is refused. Everything else gets 404,
as if there were nothing there.
"""
from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.client_ip import Network, parse_address, parse_networks

LOOPBACK = "127.0.0.0/8 ::1/128"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class MetricsAccess:
    token: str | None
    networks: tuple[Network, ...]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MetricsAccess:
        env = environ if environ is not None else os.environ
        try:
            networks = parse_networks(env.get("SWITCHBOARD_METRICS_NETWORKS") or LOOPBACK)
        except ValueError as error:
            raise ValueError(f"SWITCHBOARD_METRICS_NETWORKS: {error}") from None
        return cls(env.get("SWITCHBOARD_METRICS_TOKEN") or None, networks)

    def allows(self, authorization: str | None, client: str | None) -> bool:
        if self.token is not None:
            given = (authorization or "").removeprefix("Bearer ").strip()
            return hmac.compare_digest(given.encode(), self.token.encode())
        address = parse_address(client) if client else None
        return address is not None and any(address in network for network in self.networks)


def exposition(*, multiprocess: bool, extra: Callable[[], Any] | None = None) -> bytes:
    """The text format of this process's metrics: every relay process's (read from the multiprocess
    directory) when `multiprocess`, else the default registry; `extra()` returns one more collector
    (state read at scrape time, the same from whichever process answers)."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    if multiprocess:
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus-client
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if extra is not None:
        registry = CollectorRegistry()
        registry.register(extra())
        body += generate_latest(registry)
    return body


def readiness(checks: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """200 when every check says "ok"; 503 naming the ones that did not."""
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        return 503, {"status": "not_ready", "failed": failed, "checks": checks}
    return 200, {"status": "ready", "checks": checks}
