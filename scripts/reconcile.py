"""Cron: check that ledger sums, SQL balances and live Redis balances agree; `--fix` repairs.

    .venv/bin/python -m scripts.reconcile [--fix] [--json]
Exit 0 when everything agrees, 3 when something did not (fixed with --fix); see scripts/_common.py.
"""
from __future__ import annotations

import argparse
import json

from scripts._common import ATTENTION, OK, locked, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fix", action="store_true", help="repair balances from the ledger")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    from workers.reconcile import reconcile

    with locked("reconcile"):
        report = reconcile(fix=args.fix)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"{report.accounts} accounts checked: " + ("consistent" if report.consistent else f"{len(report.findings)} finding(s)")
              + f"; usage backlog {report.backlog} (oldest {report.backlog_age_s:.0f} s); {report.stale_holds} stale hold(s)")
        for f in report.findings:
            print(f"  {f.what} #{f.subject}: expected {f.expected}, found {f.found}{' (fixed)' if f.fixed else ''}")
    return OK if report.consistent else ATTENTION


if __name__ == "__main__":
    run(main)
