"""Cells of the CSV exports (request logs, usage): one spelling for every export.

Money is exact in two columns: decimal dollars to the micro-dollar and the integer µ$; flags are
`true`/`false`; text that a spreadsheet would run as a formula is quoted.
"""
from __future__ import annotations

from relay.pricing import micro_to_usd


def cell(value):
    """Spreadsheets run cells that start with = + - @ as formulas; model names come from callers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def flag(value) -> str:
    return "true" if value else "false"


def usd(micro: int | None) -> str:
    """Exact decimal dollars without the sign's `$` ("0.000105", "-1.500000")."""
    return micro_to_usd(int(micro or 0)).replace("$", "")
