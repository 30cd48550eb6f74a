"""Active channel health on RQ: probe channels on a schedule, apply the dead keys relays
report, and tell operators what changed.

Two workers never act on one channel at once: each channel is probed under its own Redis lock, and
all of a channel's state changes are one SQL transaction after its probes finished — a worker killed
mid-probe leaves nothing half-applied, only a lock that lapses.
"""
from __future__ import annotations

import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

from redis.exceptions import ResponseError

from controlplane.extensions import db
from controlplane.models import Channel
from controlplane.runtime import runtime
from controlplane.services import channel_health, health_notify
from controlplane.services.channel_health import DISABLED, ENABLED, Transition
from relay import redis_keys
from controlplane.services.probes import (
    ProbeResult,
    Verdict,
    probe_channel,
    probe_client,
)
from relay.health import REPORTS_GROUP, REPORTS_STREAM, Health
from workers.context import in_app_context
from workers.locks import Lock

log = logging.getLogger(__name__)
RUN_LOCK = redis_keys.LOCK_PROBE_RUN
NOTIFY_LOCK = redis_keys.LOCK_NOTIFY
STALE_MS = 60_000


def channel_lock(redis, channel_id: int, lease_seconds: float) -> Lock:
    return Lock(redis, redis_keys.probe_lock_key(channel_id), lease_seconds)


@dataclass
class ProbeRun:
    probed: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)  # another worker holds the channel
    failing: list[int] = field(default_factory=list)
    unprobeable: list[int] = field(default_factory=list)
    transitions: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _forget(transitions: list[Transition]) -> None:
    """A re-enabled key or channel starts with a clean slate in the relays' passive health."""
    health = Health(runtime().redis)
    for t in transitions:
        if t.to_status != ENABLED:
            continue
        if t.key_id:
            health.forget_key(t.channel_id, t.key_id)
        else:
            health.forget_channel(t.channel_id)


def _claim(channel_ids: list[int], run: ProbeRun, lease: float) -> list[tuple]:
    """Lock and load each channel to probe; a channel someone else holds is left to them."""
    rt = runtime()
    claimed = []
    for channel_id in channel_ids:
        lock = channel_lock(rt.redis, channel_id, lease)
        if not lock.acquire():
            run.busy.append(channel_id)
            continue
        channel = db.session.get(Channel, channel_id)
        if channel is None or channel.status == DISABLED:
            lock.release()
            continue
        view, keys = channel_health.channel_view(channel, rt.cipher.decrypt)
        claimed.append((channel_id, lock, view, keys))
    db.session.rollback()  # no transaction stays open through the network I/O
    return claimed


def _record(run: ProbeRun, channel_id: int, results: list[ProbeResult], transitions: list[Transition]) -> None:
    run.probed.append(channel_id)
    verdict = channel_health.channel_verdict(results)
    if verdict is Verdict.UNPROBEABLE:
        run.unprobeable.append(channel_id)
    elif verdict is Verdict.CHANNEL_FAIL or any(channel_health.key_passed(r, verdict) is False for r in results):
        run.failing.append(channel_id)
    run.results.extend(r.as_dict() for r in results)
    run.transitions.extend(asdict(t) for t in transitions)


def probe_channels(channel_ids: list[int] | None = None) -> ProbeRun:
    """Probe channels (default: every enabled and auto-disabled one) and apply what they show."""
    rt = runtime()
    settings = rt.settings.probe
    run = ProbeRun()
    ids = channel_health.probe_targets() if channel_ids is None else list(channel_ids)
    claimed = _claim(ids, run, settings.lock_seconds)
    client = probe_client(rt.egress(), pool_size=max(4, settings.parallel * 2))
    with ThreadPoolExecutor(max_workers=max(1, settings.parallel)) as pool:
        futures = {
            pool.submit(probe_channel, client, view, keys, settings.timeout_seconds, settings.lock_seconds / 2): (cid, lock)
            for cid, lock, view, keys in claimed
        }
        for future in as_completed(futures):
            channel_id, lock = futures[future]
            try:
                results = future.result()
                transitions = channel_health.apply_probe(channel_id, results, settings)
                _forget(transitions)
                _record(run, channel_id, results, transitions)
            except Exception:
                db.session.rollback()
                log.exception("probing channel %s failed", channel_id)
            finally:
                lock.release()
    notify()
    return run


@in_app_context
def scheduled_probe(channel_ids: list[int] | None = None) -> dict:
    """The scheduler's job: one probe run at a time (an overlapping one steps aside)."""
    rt = runtime()
    with Lock(rt.redis, RUN_LOCK, rt.settings.probe.lock_seconds) as lock:
        if not lock.acquire():
            return {"skipped": "another probe run is in progress"}
        return probe_channels(channel_ids).as_dict()


def _ensure_group(redis) -> None:
    try:
        redis.xgroup_create(REPORTS_STREAM, REPORTS_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _report(fields: dict) -> tuple[int, int, str, str, float]:
    text = {k.decode(): v.decode() for k, v in fields.items()}
    return int(text["channel"]), int(text["key"]), text.get("kind", ""), text.get("message", ""), float(text["at"])


@in_app_context
def apply_reports(batch: int = 200) -> int:
    """Disable the keys relays found dead; returns how many state changes that made."""
    redis = runtime().redis
    _ensure_group(redis)
    consumer = f"{socket.gethostname()}:{os.getpid()}"
    claimed = redis.xautoclaim(REPORTS_STREAM, REPORTS_GROUP, consumer, min_idle_time=STALE_MS, start_id="0-0", count=batch)
    entries = claimed[1] if claimed and claimed[1] else []
    if not entries:
        reply = redis.xreadgroup(REPORTS_GROUP, consumer, {REPORTS_STREAM: ">"}, count=batch)
        entries = reply[0][1] if reply else []
    changed = 0
    for entry_id, fields in entries:
        try:
            changed += len(channel_health.apply_report(*_report(fields)))
        except Exception:
            db.session.rollback()  # a report that cannot be applied is logged and dropped, not retried forever
            log.exception("health report %s could not be applied", entry_id)
    if entries:
        ids = [entry_id for entry_id, _ in entries]
        redis.xack(REPORTS_STREAM, REPORTS_GROUP, *ids)
        redis.xdel(REPORTS_STREAM, *ids)
    if changed:
        notify()
    return changed


@in_app_context
def notify() -> int:
    rt = runtime()
    with Lock(rt.redis, NOTIFY_LOCK, 120) as lock:
        if not lock.acquire():
            return 0
        return health_notify.notify_pending(rt.settings)


__all__ = ["apply_reports", "notify", "probe_channels", "scheduled_probe"]
