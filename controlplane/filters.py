"""Jinja filters for how numbers look in the consoles (ui.md: units, right-aligned, exact)."""
from __future__ import annotations

from datetime import datetime, timezone

from relay.pricing import micro_to_usd


def money(micro: int | None, places: int = 6) -> str:
    return "—" if micro is None else micro_to_usd(int(micro), places)


def per_million(micro: int | None) -> str:
    """A µ$-per-1M-tokens price as dollars per 1M tokens, without trailing zeros past cents."""
    if micro is None:
        return "—"
    text = micro_to_usd(int(micro), 6)
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return whole + "." + frac.ljust(2, "0")


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def init_app(app) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(per_million, "per_million")
    app.add_template_filter(when, "when")
