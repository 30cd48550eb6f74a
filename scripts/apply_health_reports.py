"""Disable the upstream keys relays found dead — what the scheduler does every few seconds.

    .venv/bin/python -m scripts.apply_health_reports

Exit codes: 0 done (the output says how many state changes); 75 another copy is running; 1 failed.
"""
from __future__ import annotations

import sys

from relay import redis_keys

REPORTS_LOCK = redis_keys.LOCK_APPLY_REPORTS


def main() -> int:
    try:
        from workers.context import process_app

        with process_app().app_context():
            from controlplane.runtime import runtime
            from workers import health
            from workers.locks import Lock

            with Lock(runtime().redis, REPORTS_LOCK, 120) as lock:
                if not lock.acquire():
                    print("another copy is applying reports; nothing done", file=sys.stderr)
                    return 75
                changed = health.apply_reports()
    except Exception as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"{changed} state change(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
