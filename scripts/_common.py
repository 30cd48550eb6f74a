"""What every cron entry point shares: a Redis lock and the exit codes.

Run them from the repository root as modules (`.venv/bin/python -m scripts.reconcile`). Exit codes,
the same for every script: 0 done, nothing wrong; 1 the run itself failed; 2 bad arguments
(argparse); 3 done, and something needs attention (the output says what); 75 another run holds the
lock and nothing was done (EX_TEMPFAIL: overlapping cron runs are safe, the second steps aside).
"""
from __future__ import annotations

import contextlib
import sys

from relay import redis_keys

OK, FAILED, ATTENTION, BUSY = 0, 1, 3, 75


@contextlib.contextmanager
def locked(name: str, ttl: int = 600):
    """Hold a Redis lock for the run, or exit BUSY if another run holds it."""
    from workers.context import process_app

    app = process_app()
    with app.app_context():
        redis = app.extensions["switchboard"].redis
        lock = redis.lock(redis_keys.cron_lock_key(name), timeout=ttl, blocking=False)
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
