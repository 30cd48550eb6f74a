"""Cron: release holds left open by a relay that died mid-request (older than the hold TTL).

    .venv/bin/python -m scripts.sweep_holds
Exit 0 (prints how many were released); see scripts/_common.py.
"""
from __future__ import annotations

from scripts._common import OK, locked, run


def main() -> int:
    from workers.maintenance import sweep_holds

    with locked("sweep_holds", ttl=120):
        released = sweep_holds()
    print(f"released {released} expired hold(s)")
    return OK


if __name__ == "__main__":
    run(main)
