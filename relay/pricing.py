"""Integer money arithmetic: token counts × prices → micro-dollars. Pure; no I/O, no floats.

Prices are µ$ per 1M tokens; group multipliers are basis points (10,000 = 1.0×). A request is
rounded once, half up, after everything is summed (design.md §2).
"""
from __future__ import annotations

from dataclasses import dataclass

MICRO_PER_USD = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000
BP_ONE = 10_000


@dataclass(frozen=True, slots=True)
class Usage:
    """A request's usage in the five normalised counts; none overlaps another."""

    input: int = 0  # uncached prompt tokens
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0  # visible completion tokens, reasoning excluded
    reasoning: int = 0

    @property
    def total(self) -> int:
        return self.input + self.cache_read + self.cache_write + self.output + self.reasoning

    @property
    def prompt_total(self) -> int:
        return self.input + self.cache_read + self.cache_write

    @property
    def completion_total(self) -> int:
        return self.output + self.reasoning


@dataclass(frozen=True, slots=True)
class Price:
    """One model's price in force from `effective_from` (epoch seconds)."""

    model: str
    input: int
    output: int
    cache_read: int | None = None  # None: billed as input
    cache_write: int | None = None  # None: billed as input
    reasoning: int | None = None  # None: billed as output
    per_request: int = 0  # µ$ per request
    effective_from: float = 0.0
    max_output_tokens: int | None = None  # caps the hold when a request names no max_tokens

    @property
    def cache_read_rate(self) -> int:
        return self.input if self.cache_read is None else self.cache_read

    @property
    def cache_write_rate(self) -> int:
        return self.input if self.cache_write is None else self.cache_write

    @property
    def reasoning_rate(self) -> int:
        return self.output if self.reasoning is None else self.reasoning


def round_half_up(numerator: int, denominator: int) -> int:
    """Integer division rounded half away from zero, for non-negative numerators."""
    if numerator < 0:
        return -round_half_up(-numerator, denominator)
    return (2 * numerator + denominator) // (2 * denominator)


def cost(usage: Usage, price: Price, multiplier_bp: int = BP_ONE) -> int:
    """The charge in µ$ for one request: Σ countᵢ × priceᵢ, plus the per-request price, × multiplier."""
    token_part = (
        usage.input * price.input
        + usage.cache_read * price.cache_read_rate
        + usage.cache_write * price.cache_write_rate
        + usage.output * price.output
        + usage.reasoning * price.reasoning_rate
    )
    scaled = (token_part + price.per_request * TOKENS_PER_PRICE_UNIT) * multiplier_bp
    return round_half_up(scaled, TOKENS_PER_PRICE_UNIT * BP_ONE)


def hold_amount(prompt_tokens: int, max_output_tokens: int, price: Price, multiplier_bp: int = BP_ONE) -> int:
    """The most a request can cost: every prompt token at the dearest input rate and every
    completion token at the dearest output rate. Never less than any settle within those counts."""
    worst_in = max(price.input, price.cache_read_rate, price.cache_write_rate)
    worst_out = max(price.output, price.reasoning_rate)
    worst = Price(model=price.model, input=worst_in, output=worst_out, per_request=price.per_request)
    return cost(Usage(input=prompt_tokens, output=max_output_tokens), worst, multiplier_bp)


def usd_to_micro(text: str) -> int:
    """Parse a decimal USD amount exactly ("2.50" → 2,500,000); refuses sub-micro precision."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {text!r}")
    micro = value * MICRO_PER_USD
    if micro != micro.to_integral_value():
        raise ValueError(f"more precise than a micro-dollar: {text!r}")
    return int(micro)


def micro_to_usd(micro: int, places: int = 6) -> str:
    """Format µ$ as a dollar string with a fixed number of decimals, exactly."""
    sign = "-" if micro < 0 else ""
    micro = abs(micro)
    whole, frac = divmod(micro, MICRO_PER_USD)
    frac_text = f"{frac:06d}"[:places] if places else ""
    if places and places < 6:
        # Round half up at the requested precision rather than truncating.
        unit = 10 ** (6 - places)
        rounded = round_half_up(micro, unit)
        whole, frac = divmod(rounded, 10**places)
        frac_text = f"{frac:0{places}d}"
    return f"{sign}${whole}" + (f".{frac_text}" if places else "")
