"""Cron: delete raw request logs past their retention (SWITCHBOARD_LOG_RETENTION_DAYS, default 90),
in bounded batches (on PostgreSQL: drop the month partitions past retention, after creating the
months ahead). Rollups, ledger entries and refunds are kept.

    .venv/bin/python -m scripts.prune_logs [--days N]
Exit 0 (prints how many were deleted); see scripts/_common.py.
"""
from __future__ import annotations

import argparse

from scripts._common import OK, locked, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=None, help="keep this many days (default: the retention setting)")
    args = parser.parse_args()
    if args.days is not None and args.days < 1:
        parser.error("--days must be at least 1")
    from workers.maintenance import ensure_log_partitions, prune_request_logs

    with locked("prune_logs", ttl=3_600):
        ensure_log_partitions()
        deleted = prune_request_logs(args.days)
    print(f"deleted {deleted} request log(s) past retention")
    return OK


if __name__ == "__main__":
    run(main)
