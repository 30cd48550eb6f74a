"""What every cron entry point shares: the repository on sys.path, a Redis lock, exit codes.

Exit codes: 0 done (nothing wrong), 1 done but something needed attention, 2 failed, 3 another run
holds the lock (overlapping cron runs are safe: the second one steps aside).
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OK, ATTENTION, FAILED, BUSY = 0, 1, 2, 3


@contextlib.contextmanager
def locked(name: str, ttl: int = 600):
    """Hold a Redis lock for the run, or exit BUSY if another run holds it."""
    from workers.context import process_app

    app = process_app()
    with app.app_context():
        redis = app.extensions["switchboard"].redis
        lock = redis.lock(f"sb:cron:{name}", timeout=ttl, blocking=False)
        if not lock.acquire():
            print(f"{name}: another run is in progress", file=sys.stderr)
            sys.exit(BUSY)
        try:
            yield app
        finally:
            with contextlib.suppress(Exception):
                lock.release()


def run(main) -> None:
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception as error:  # a cron mail of one line, not a traceback
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(FAILED)
