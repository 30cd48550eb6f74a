"""Probe channels now — what the scheduler does every SWITCHBOARD_PROBE_EVERY_SECONDS.

    .venv/bin/python -m scripts.health_check [--channel ID ...] [--json]

Exit codes: 0 every probed channel passed; 3 some channel failed or could not be probed (the output
says which); 75 another probe run holds the lock, nothing was done; 1 the run itself failed.
"""
from __future__ import annotations

import argparse
import json
import sys

OK, FAILING, BUSY, ERROR = 0, 3, 75, 1


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="health_check", description=__doc__.splitlines()[0])
    parser.add_argument("--channel", type=int, action="append", help="Only this channel (repeatable).")
    parser.add_argument("--json", action="store_true", help="Print the run as one JSON object.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        from workers.context import process_app

        with process_app().app_context():
            from controlplane.runtime import runtime
            from workers import health
            from workers.locks import Lock

            rt = runtime()
            with Lock(rt.redis, health.RUN_LOCK, rt.settings.probe.lock_seconds) as lock:
                if not lock.acquire():
                    print("another probe run is in progress; nothing done", file=sys.stderr)
                    return BUSY
                run = health.probe_channels(args.channel)
    except Exception as error:  # one line, never a traceback, for cron's mail
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return ERROR
    if args.json:
        print(json.dumps(run.as_dict(), default=str, sort_keys=True))
    else:
        print(f"probed {len(run.probed)} channel(s); failing {run.failing or 'none'}; cannot probe {run.unprobeable or 'none'}; "
              f"busy {run.busy or 'none'}; {len(run.transitions)} state change(s)")
    return FAILING if run.failing or run.unprobeable else OK


if __name__ == "__main__":
    sys.exit(main())
