"""Relay settings: read from the environment in one place, passed in everywhere else."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.client_ip import Network, parse_networks
from relay.edge import EdgeLimits
from relay.health import HealthPolicy

DEFAULT_INSTANCE = "instance"
EVERY_INTERFACE = "0.0.0.0"  # the relay is the public API; the consoles default to 127.0.0.1  # nosec B104


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    raw = (environ if environ is not None else os.environ).get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    raw = (environ if environ is not None else os.environ).get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def env_networks(name: str, environ: Mapping[str, str] | None = None) -> tuple[Network, ...]:
    try:
        return parse_networks((environ if environ is not None else os.environ).get(name))
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def read_secret(name: str, env_var: str, instance_dir: Path, environ: Mapping[str, str] | None = None) -> str | None:
    """A secret given in the environment wins; otherwise the one generated into the instance folder."""
    env = environ if environ is not None else os.environ
    if env.get(env_var):
        return env[env_var]
    path = instance_dir / name
    if path.exists():
        return path.read_text().strip()
    return None


@dataclass(frozen=True)
class Timeouts:
    """Per-request upstream time limits, in seconds; channels may override them."""

    connect: float = 10.0
    first_byte: float = 300.0  # long reasoning models think before the first token
    idle: float = 120.0  # longest gap between two streamed chunks
    total: float = 900.0

    def within(self, remaining: float) -> "Timeouts":
        """These limits, none longer than the `remaining` seconds of the request's deadline."""
        remaining = max(remaining, 0.001)
        return Timeouts(min(self.connect, remaining), min(self.first_byte, remaining), min(self.idle, remaining), min(self.total, remaining))


@dataclass(frozen=True)
class RelaySettings:
    redis_url: str
    encryption_key: str | None
    instance_dir: Path = Path(DEFAULT_INSTANCE)
    host: str = EVERY_INTERFACE
    port: int = 8001
    max_body_bytes: int = 32 * 1024 * 1024
    # Output tokens reserved when a request names no max_tokens and its model no cap.
    default_hold_output_tokens: int = 4096
    # A request whose output the relay can cap is admitted when the money covers its input and at
    # least this many output tokens per choice (or what it asked for, if fewer); the upstream is
    # then told to write no more than what was reserved.
    min_hold_output_tokens: int = 256
    # A hold still open this long after its request's deadline belongs to a relay that died: the
    # sweeper releases it (a live request settles before its deadline, or it has none left).
    hold_margin_seconds: int = 60
    max_attempts: int = 3
    snapshot_poll_seconds: float = 5.0
    upstream_pool_size: int = 256
    redis_pool_size: int = 64
    # Concurrent admits (and settles) of one process share a Redis call: up to this many in one,
    # with at most `redis_batch_in_flight` such calls on their way at once (relay/script_batch.py).
    redis_batch_size: int = 32
    redis_batch_in_flight: int = 2
    # Admit and settle as a call per slot touched (relay/admission.py). None: exactly when the
    # cluster layout spreads the money (relay/redis_keys.py); True runs that path on one server,
    # where the tests check that it serves as the one script does.
    admission_split: bool | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    # passive health (Envoy outlier detection) and Envoy's retry budget
    health: HealthPolicy = field(default_factory=HealthPolicy)
    retry_budget_percent: float = 20.0
    retry_budget_min: int = 3
    retry_budget_shared: bool = True  # one budget for every relay process, through Redis (relay/retry_budget.py)
    # What the HTTP server allows a client (relay/edge.py), and the proxies whose forwarding
    # headers name the client (relay/client_ip.py).
    edge: EdgeLimits = field(default_factory=EdgeLimits)
    trusted_proxies: tuple[Network, ...] = ()
    # Idempotent retries: how long a finished request's outcome is kept for replay, and the largest
    # response (a stream's bytes included) that is kept; a larger one is charged once and not replayed.
    idempotency_ttl_seconds: int = 86_400
    idempotency_max_bytes: int = 1024 * 1024
    # GET /v1/generation: how long each request's record stays in Redis (0: none are written).
    generation_ttl_seconds: int = 86_400
    # Private ranges upstreams may be in (relay/egress.py): none unless the operator lists them.
    egress_allow: tuple[Network, ...] = ()
    # The largest non-streamed upstream answer read (image results in base64 are the big ones).
    max_response_bytes: int = 64 * 1024 * 1024
    # Each process's cache of key records (relay/key_cache.py): entries and seconds.
    key_cache_size: int = 50_000
    key_cache_ttl: float = 60.0
    key_negative_cache_size: int = 10_000
    key_negative_cache_ttl: float = 10.0
    # SIGTERM: how long requests and streams in flight may take to finish before they are cut.
    drain_seconds: float = 30.0
    # /readyz fails when the snapshot was last confirmed current longer ago than this.
    ready_snapshot_max_age: float = 30.0
    # Prompt-cache affinity (relay/affinity.py): how long a conversation stays pinned to the channel
    # key that served it after its last turn; 0 turns affinity off.
    affinity_ttl_seconds: int = 600

    @property
    def hold_seconds(self) -> float:
        """How long a hold lives: the request's own deadline (every attempt and stream included) plus
        the margin."""
        return self.timeouts.total + self.hold_margin_seconds

    @property
    def lease_seconds(self) -> float:
        """How long a concurrency slot outlives a relay that died holding it."""
        return self.timeouts.total + 60

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "RelaySettings":
        env = environ if environ is not None else os.environ
        instance = Path(env.get("SWITCHBOARD_INSTANCE", DEFAULT_INSTANCE)).resolve()
        values: dict[str, Any] = dict(
            redis_url=env.get("REDIS_URL", ""),
            encryption_key=read_secret("encryption.key", "SWITCHBOARD_ENCRYPTION_KEY", instance, env),
            instance_dir=instance,
            host=env.get("SWITCHBOARD_RELAY_HOST", EVERY_INTERFACE),
            port=env_int("SWITCHBOARD_RELAY_PORT", 8001, env),
            max_body_bytes=env_int("SWITCHBOARD_MAX_BODY_BYTES", 32 * 1024 * 1024, env),
            default_hold_output_tokens=env_int("SWITCHBOARD_DEFAULT_HOLD_OUTPUT_TOKENS", 4096, env),
            min_hold_output_tokens=env_int("SWITCHBOARD_MIN_HOLD_OUTPUT_TOKENS", 256, env),
            hold_margin_seconds=env_int("SWITCHBOARD_HOLD_MARGIN_SECONDS", 60, env),
            max_attempts=env_int("SWITCHBOARD_MAX_ATTEMPTS", 3, env),
            snapshot_poll_seconds=env_float("SWITCHBOARD_SNAPSHOT_POLL_SECONDS", 5.0, env),
            upstream_pool_size=env_int("SWITCHBOARD_UPSTREAM_POOL_SIZE", 256, env),
            redis_pool_size=env_int("SWITCHBOARD_REDIS_POOL_SIZE", 64, env),
            redis_batch_size=env_int("SWITCHBOARD_REDIS_BATCH_SIZE", 32, env),
            redis_batch_in_flight=env_int("SWITCHBOARD_REDIS_BATCH_IN_FLIGHT", 2, env),
            timeouts=Timeouts(
                connect=env_float("SWITCHBOARD_UPSTREAM_CONNECT_TIMEOUT", 10.0, env),
                first_byte=env_float("SWITCHBOARD_UPSTREAM_FIRST_BYTE_TIMEOUT", 300.0, env),
                idle=env_float("SWITCHBOARD_UPSTREAM_IDLE_TIMEOUT", 120.0, env),
                total=env_float("SWITCHBOARD_UPSTREAM_TOTAL_TIMEOUT", 900.0, env),
            ),
            health=HealthPolicy(
                failures=env_int("SWITCHBOARD_EJECT_AFTER_FAILURES", 5, env),
                base_seconds=env_float("SWITCHBOARD_EJECT_BASE_SECONDS", 30.0, env),
                max_seconds=env_float("SWITCHBOARD_EJECT_MAX_SECONDS", 300.0, env),
                cooldown_seconds=env_float("SWITCHBOARD_COOLDOWN_SECONDS", 5.0, env),
            ),
            retry_budget_percent=env_float("SWITCHBOARD_RETRY_BUDGET_PERCENT", 20.0, env),
            retry_budget_min=env_int("SWITCHBOARD_RETRY_BUDGET_MIN", 3, env),
            retry_budget_shared=env.get("SWITCHBOARD_RETRY_BUDGET_SHARED", "1").strip().lower() not in ("0", "false", "no", "off"),
            edge=EdgeLimits(
                header_timeout=env_float("SWITCHBOARD_HTTP_HEADER_TIMEOUT", 10.0, env),
                idle_timeout=env_float("SWITCHBOARD_HTTP_IDLE_TIMEOUT", 75.0, env),
                body_read_timeout=env_float("SWITCHBOARD_HTTP_BODY_READ_TIMEOUT", 30.0, env),
                body_min_rate=env_int("SWITCHBOARD_HTTP_BODY_MIN_RATE", 4096, env),
                body_rate_grace=env_float("SWITCHBOARD_HTTP_BODY_RATE_GRACE", 10.0, env),
                max_header_bytes=env_int("SWITCHBOARD_HTTP_MAX_HEADER_BYTES", 64 * 1024, env),
                max_headers=env_int("SWITCHBOARD_HTTP_MAX_HEADERS", 100, env),
                buffer_body_bytes=env_int("SWITCHBOARD_HTTP_BUFFER_BODY_BYTES", 64 * 1024, env),
                max_connections=env_int("SWITCHBOARD_HTTP_MAX_CONNECTIONS", 0, env),
                max_connections_per_ip=env_int("SWITCHBOARD_HTTP_MAX_CONNECTIONS_PER_IP", 1000, env),
            ),
            trusted_proxies=env_networks("SWITCHBOARD_TRUSTED_PROXIES", env),
            idempotency_ttl_seconds=env_int("SWITCHBOARD_IDEMPOTENCY_TTL_SECONDS", 86_400, env),
            idempotency_max_bytes=env_int("SWITCHBOARD_IDEMPOTENCY_MAX_BYTES", 1024 * 1024, env),
            generation_ttl_seconds=env_int("SWITCHBOARD_GENERATION_TTL_SECONDS", 86_400, env),
            egress_allow=env_networks("SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS", env),
            max_response_bytes=env_int("SWITCHBOARD_MAX_UPSTREAM_RESPONSE_BYTES", 64 * 1024 * 1024, env),
            key_cache_size=env_int("SWITCHBOARD_KEY_CACHE_SIZE", 50_000, env),
            key_cache_ttl=env_float("SWITCHBOARD_KEY_CACHE_TTL", 60.0, env),
            key_negative_cache_size=env_int("SWITCHBOARD_KEY_NEGATIVE_CACHE_SIZE", 10_000, env),
            key_negative_cache_ttl=env_float("SWITCHBOARD_KEY_NEGATIVE_CACHE_TTL", 10.0, env),
            drain_seconds=env_float("SWITCHBOARD_DRAIN_SECONDS", 30.0, env),
            ready_snapshot_max_age=env_float("SWITCHBOARD_READY_SNAPSHOT_MAX_AGE", 30.0, env),
            affinity_ttl_seconds=env_int("SWITCHBOARD_AFFINITY_TTL_SECONDS", 600, env),
        )
        values.update(overrides)
        return cls(**values)
