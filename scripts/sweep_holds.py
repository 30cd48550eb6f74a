#!/usr/bin/env python3
"""Cron: release holds left open by a relay that died mid-request (older than the hold TTL).

    scripts/sweep_holds.py
Exit 0 (prints how many were released), 2 on error, 3 if another run is in progress.
"""
from __future__ import annotations

from _common import OK, locked, run


def main() -> int:
    from workers.maintenance import sweep_holds

    with locked("sweep_holds", ttl=120):
        released = sweep_holds()
    print(f"released {released} expired hold(s)")
    return OK


if __name__ == "__main__":
    run(main)
