"""Periodic upkeep: release abandoned holds, republish the snapshot as a backstop."""
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
