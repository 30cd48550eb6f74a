"""Periodic upkeep: release abandoned holds, republish the snapshot as a backstop, rebuild key
records and balances after a Redis loss, and sweep key records for drift from SQL."""
from __future__ import annotations

import time

from controlplane.runtime import runtime
from workers.context import in_app_context


@in_app_context
def sweep_holds() -> int:
    """Release holds whose request never settled (a relay crashed mid-request)."""
    return runtime().quota.release_expired(time.time())


@in_app_context
def republish_snapshot() -> int:
    """Rebuild and publish the snapshot (ban expiries, scheduled prices, a lost publish)."""
    from controlplane.snapshot import publish

    return publish()


# Each run stays well inside its job timeout; the next run continues from the cursor.
REBUILD_SLICE_SECONDS = 120


@in_app_context
def ensure_key_records() -> bool:
    """Rebuild key records and live balances from SQL when Redis lost them (one slice per run, one
    run at a time). True when Redis has them."""
    from controlplane import key_rebuild
    from workers.locks import Lock

    rt = runtime()
    if key_rebuild.is_ready(rt.redis):
        return True
    with Lock(rt.redis, "sb:lock:key-rebuild", REBUILD_SLICE_SECONDS * 2) as lock:
        if not lock.acquire():
            return False
        progress = key_rebuild.rebuild(rt.redis, seconds=REBUILD_SLICE_SECONDS)
    return progress.done


@in_app_context
def sweep_key_records() -> int:
    """Rewrite key records that drifted from SQL (a write whose Redis half failed)."""
    from controlplane import key_rebuild

    return key_rebuild.sweep(runtime().redis)
