"""Jinja filters for how numbers look in the consoles (ui.md: units, right-aligned, exact)."""
from __future__ import annotations

from datetime import datetime, timezone

from markupsafe import Markup

from relay.pricing import micro_to_usd, usd_text


def exact_usd(micro: int | None) -> str:
    return "—" if micro is None else micro_to_usd(int(micro))


def exact_money(micro: int) -> str:
    """The exact amount, for hover: "$0.000105 (105 µ$)"."""
    return f"{micro_to_usd(micro)} ({micro:,} µ$)"


def money(micro: int | None) -> Markup:
    """An amount as people read it (`usd_text`), with the exact amount on hover."""
    if micro is None:
        return Markup("—")
    micro = int(micro)
    return Markup('<span class="money" title="{}">{}</span>').format(exact_money(micro), usd_text(micro))


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


def _relative(value: datetime, now: datetime) -> str:
    seconds = int((now - value).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "min")):
        if seconds >= size:
            # a future moment rounds to the nearest unit: a notice of 7 days, rendered a second later, is "in 7 days"
            n = (seconds + size // 2) // size if future else seconds // size
            text = f"{n} {unit}{'s' if n != 1 and unit != 'min' else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"


def ago(value: datetime | None) -> Markup:
    """A relative time ("3 hours ago") with the exact time on hover."""
    if value is None:
        return Markup("—")
    exact = when(value)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(value.isoformat(), exact, _relative(value, datetime.now(timezone.utc)))


def ms(value: int | None) -> str:
    return "—" if value is None else f"{value:,} ms"


def pct(value: float | None, places: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{places}f}%"


def uptime(value: float | None) -> str:
    """A share of good requests, rounded down: 99.999% reads 99.99%, never 100% unless it was."""
    if value is None:
        return "no traffic"
    hundredths = int(round(value * 10_000, 6))  # round first: 0.9999 * 10_000 is 9998.999… in floats
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def bp_pct(value: int | None) -> str:
    """Basis points as a percentage: 6000 → 60%."""
    if value is None:
        return "—"
    whole, rest = divmod(value, 100)
    return f"{whole}.{rest:02d}".rstrip("0").rstrip(".") + "%"


def multiplier(value: int | None) -> str:
    """Basis points as a multiplier: 12500 → 1.25×."""
    if value is None:
        return "—"
    text = f"{value / 10_000:.4f}".rstrip("0").rstrip(".")
    return f"{text}×"


def short(value: int | None) -> str:
    """Counts for summaries: 1234 → 1.2k, 2500000 → 2.5M (details show exact counts)."""
    if value is None:
        return "—"
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return str(value)


def combine(a: dict, b: dict) -> dict:
    return {**(a or {}), **(b or {})}


def init_app(app) -> None:
    for name, fn in (("money", money), ("exact_usd", exact_usd), ("per_million", per_million), ("when", when), ("ago", ago), ("ms", ms), ("pct", pct),
                     ("bp_pct", bp_pct), ("multiplier", multiplier), ("short", short), ("combine", combine),
                     ("uptime", uptime), ("usd_text", usd_text)):
        app.add_template_filter(fn, name)
