"""Control plane settings: one frozen dataclass read from the environment in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from controlplane import instance
from controlplane.notify import SmtpSettings
from relay.client_ip import Network, parse_networks
from relay.settings import DEFAULT_INSTANCE, RelaySettings, env_float, env_int


def normalise_database_url(url: str) -> str:
    """Accept the usual postgres URLs and point SQLAlchemy at psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def env_bool(name: str, default: bool, environ) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def trusted_proxies(environ) -> tuple[Network, ...]:
    try:
        return parse_networks(environ.get("SWITCHBOARD_TRUSTED_PROXIES"))
    except ValueError as error:
        raise ValueError(f"SWITCHBOARD_TRUSTED_PROXIES: {error}") from None


@dataclass(frozen=True)
class ProbeSettings:
    """Active health checks (workers/health.py)."""

    every_seconds: int = 300  # how often the scheduler probes every channel
    disable_after: int = 3  # consecutive failing probes that auto-disable
    enable_after: int = 2  # consecutive passing probes that re-enable an auto-disabled one
    timeout_seconds: float = 30.0  # one probe request, end to end
    lock_seconds: int = 300  # a crashed worker's hold on a channel lapses after this
    parallel: int = 8  # channels probed at once


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    secret_key: str
    encryption_key: str
    instance_dir: Path = Path(DEFAULT_INSTANCE)
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""  # how users reach the gateway; shown in the consoles
    secure_cookies: bool = False
    testing: bool = False
    usage_batch_size: int = 1_000
    usage_linger_ms: int = 250  # how long the consumer lets a batch gather after its first event
    # Raw request logs older than this are deleted (the hourly rollups, the ledger and refunds stay).
    log_retention_days: int = 90
    # Sign-in throttles (controlplane/login_guard.py): failures per minute for one email from one
    # address, failures per minute from one address, and the longest wait added to every attempt on
    # an email many addresses are guessing at (a delay, never a lockout of the owner).
    login_attempts_per_minute: int = 10
    login_attempts_per_ip_per_minute: int = 30
    login_delay_cap_seconds: float = 4.0
    # Admins must turn on two-factor sign-in before they can do anything else (controlplane/two_factor.py).
    require_2fa: bool = False
    # Proxies whose X-Forwarded-For / Forwarded is believed (relay/client_ip.py); empty: none.
    trusted_proxies: tuple[Network, ...] = ()
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    webhook_secret: str = ""  # signs outgoing webhooks (X-Switchboard-Signature)
    # Where the Stripe library sends its API calls; empty is Stripe itself (tests point it at a fake).
    stripe_api_base: str = ""
    signup: str = "open"  # user console: who may create an account — open | invite | closed
    # who hears about channel state changes, and the active health checks
    alert_emails: tuple[str, ...] = ()
    alert_webhook_url: str = ""
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    relay: RelaySettings | None = field(default=None)
    queue_redis_url: str = ""  # RQ's jobs (worker, scheduler, enqueues); empty: REDIS_URL. RQ needs one server, not a cluster

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        env = os.environ if environ is None else environ
        instance_dir = Path(env.get("SWITCHBOARD_INSTANCE", DEFAULT_INSTANCE)).resolve()
        database_url = env.get("DATABASE_URL") or f"sqlite:///{instance.ensure_dir(instance_dir) / 'switchboard.db'}"
        port = env_int("SWITCHBOARD_PORT", 8000, env)
        values = dict(
            database_url=normalise_database_url(database_url),
            redis_url=env.get("REDIS_URL", ""),
            queue_redis_url=env.get("SWITCHBOARD_QUEUE_REDIS_URL", ""),
            secret_key=env.get("SWITCHBOARD_SECRET_KEY") or instance.session_secret(instance_dir),
            encryption_key=env.get("SWITCHBOARD_ENCRYPTION_KEY") or instance.encryption_secret(instance_dir),
            instance_dir=instance_dir,
            host=env.get("SWITCHBOARD_HOST", "127.0.0.1"),
            port=port,
            public_url=env.get("SWITCHBOARD_PUBLIC_URL", f"http://127.0.0.1:{port}"),
            secure_cookies=env_bool("SWITCHBOARD_SECURE_COOKIES", False, env),
            usage_batch_size=env_int("SWITCHBOARD_USAGE_BATCH", 1_000, env),
            usage_linger_ms=env_int("SWITCHBOARD_USAGE_LINGER_MS", 250, env),
            log_retention_days=env_int("SWITCHBOARD_LOG_RETENTION_DAYS", 90, env),
            login_attempts_per_minute=env_int("SWITCHBOARD_LOGIN_ATTEMPTS_PER_MINUTE", 10, env),
            login_attempts_per_ip_per_minute=env_int("SWITCHBOARD_LOGIN_ATTEMPTS_PER_IP_PER_MINUTE", 30, env),
            login_delay_cap_seconds=env_float("SWITCHBOARD_LOGIN_DELAY_CAP_SECONDS", 4.0, env),
            trusted_proxies=trusted_proxies(env),
            require_2fa=env_bool("SWITCHBOARD_REQUIRE_2FA", False, env),
            smtp=SmtpSettings(
                host=env.get("SWITCHBOARD_SMTP_HOST", ""),
                port=env_int("SWITCHBOARD_SMTP_PORT", 587, env),
                username=env.get("SWITCHBOARD_SMTP_USER", ""),
                password=env.get("SWITCHBOARD_SMTP_PASSWORD", ""),
                sender=env.get("SWITCHBOARD_SMTP_FROM", "switchboard@localhost"),
                starttls=env_bool("SWITCHBOARD_SMTP_STARTTLS", True, env),
            ),
            webhook_secret=env.get("SWITCHBOARD_WEBHOOK_SECRET", ""),
            stripe_api_base=env.get("SWITCHBOARD_STRIPE_API_BASE", ""),
            signup=env.get("SWITCHBOARD_SIGNUP", "open").strip().lower() or "open",
            alert_emails=tuple(e.strip() for e in env.get("SWITCHBOARD_ALERT_EMAILS", "").split(",") if e.strip()),
            alert_webhook_url=env.get("SWITCHBOARD_ALERT_WEBHOOK_URL", ""),
            probe=ProbeSettings(
                every_seconds=env_int("SWITCHBOARD_PROBE_EVERY_SECONDS", 300, env),
                disable_after=env_int("SWITCHBOARD_PROBE_DISABLE_AFTER", 3, env),
                enable_after=env_int("SWITCHBOARD_PROBE_ENABLE_AFTER", 2, env),
                timeout_seconds=float(env_int("SWITCHBOARD_PROBE_TIMEOUT_SECONDS", 30, env)),
                lock_seconds=env_int("SWITCHBOARD_PROBE_LOCK_SECONDS", 300, env),
                parallel=env_int("SWITCHBOARD_PROBE_PARALLEL", 8, env),
            ),
        )
        values.update(overrides)
        if values["signup"] not in ("open", "invite", "closed"):
            raise ValueError(f"SWITCHBOARD_SIGNUP must be open, invite or closed, got {values['signup']!r}")
        settings = cls(**values)
        relay = RelaySettings.from_env(env, redis_url=settings.redis_url, encryption_key=settings.encryption_key, instance_dir=instance_dir)
        return replace(settings, relay=relay)

    def relay_settings(self) -> RelaySettings:
        if self.relay is not None:
            return replace(self.relay, redis_url=self.redis_url, encryption_key=self.encryption_key)
        return RelaySettings(redis_url=self.redis_url, encryption_key=self.encryption_key, instance_dir=self.instance_dir)
