"""Integer money arithmetic: token counts and other units × prices → micro-dollars. Pure; no I/O,
no floats.

Token prices are µ$ per 1M tokens; images are µ$ per image (by size/quality), speech input µ$ per 1M
characters, transcription µ$ per minute of audio billed by the whole second. Group multipliers are
basis points (10,000 = 1.0×). A request is rounded once, half up, after everything is summed.

"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MICRO_PER_USD = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000
CHARS_PER_PRICE_UNIT = 1_000_000
SECONDS_PER_MINUTE = 60
BP_ONE = 10_000
ANY = "*"


@dataclass(frozen=True, slots=True)
class Usage:
    """A request's usage in the five normalised counts; none overlaps another."""

    input: int = 0  # uncached prompt tokens
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0  # visible completion tokens, reasoning excluded
    reasoning: int = 0
    # Units that are not tokens (images, speech, transcription); zero for chat.
    images: int = 0
    image_tier: str = ""  # "SIZE/QUALITY" as the request asked, e.g. "1024x1024/hd"
    characters: int = 0
    audio_seconds: int = 0

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
    per_image: int | None = None  # µ$ per image when no image tier matches
    image_prices: tuple[tuple[str, int], ...] = ()  # ("SIZE/QUALITY", µ$ per image); "*" matches any
    per_1m_chars: int | None = None  # µ$ per 1M characters of speech input
    per_minute_audio: int | None = None  # µ$ per minute of transcribed audio

    @property
    def cache_read_rate(self) -> int:
        return self.input if self.cache_read is None else self.cache_read

    @property
    def cache_write_rate(self) -> int:
        return self.input if self.cache_write is None else self.cache_write

    @property
    def reasoning_rate(self) -> int:
        return self.output if self.reasoning is None else self.reasoning

    @property
    def prices_images(self) -> bool:
        return self.per_image is not None or bool(self.image_prices)

    def image_rate(self, tier: str) -> int:
        """µ$ per image of `tier` ("SIZE/QUALITY"): exact, then SIZE/*, */QUALITY, */*, then per_image."""
        size, _, quality = tier.partition("/")
        table = dict(self.image_prices)
        for candidate in (f"{size}/{quality}", f"{size}/{ANY}", f"{ANY}/{quality}", f"{ANY}/{ANY}"):
            if candidate in table:
                return table[candidate]
        return self.per_image or 0

    def to_dict(self) -> dict[str, Any]:
        """The snapshot payload form (JSON-friendly)."""
        return {
            "model": self.model,
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "reasoning": self.reasoning,
            "per_request": self.per_request,
            "effective_from": self.effective_from,
            "max_output_tokens": self.max_output_tokens,
            "per_image": self.per_image,
            "image_prices": dict(self.image_prices),
            "per_1m_chars": self.per_1m_chars,
            "per_minute_audio": self.per_minute_audio,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Price":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["image_prices"] = image_table(fields.get("image_prices"))
        return cls(**fields)


def image_table(prices: Any) -> tuple[tuple[str, int], ...]:
    """A per-image price table in its canonical, hashable form, sorted by tier."""
    return tuple(sorted((str(k), int(v)) for k, v in dict(prices or {}).items()))


def round_half_up(numerator: int, denominator: int) -> int:
    """Integer division rounded half away from zero, for non-negative numerators."""
    if numerator < 0:
        return -round_half_up(-numerator, denominator)
    return (2 * numerator + denominator) // (2 * denominator)


SCALE = TOKENS_PER_PRICE_UNIT * SECONDS_PER_MINUTE * BP_ONE  # what `_scaled` amounts are in units of


def cost(usage: Usage, price: Price, multiplier_bp: int = BP_ONE) -> int:
    """The charge in µ$ for one request: Σ countᵢ × priceᵢ, plus the per-request price, × multiplier."""
    return round_half_up(_scaled(usage, price, multiplier_bp), SCALE)


def _scaled(usage: Usage, price: Price, multiplier_bp: int) -> int:
    """The exact charge in µ$ × SCALE. Every part is scaled to µ$ × 1M × 60 so that per-token,
    per-character and per-second-of-a-per-minute-price amounts add up exactly before rounding."""
    token_part = (
        usage.input * price.input
        + usage.cache_read * price.cache_read_rate
        + usage.cache_write * price.cache_write_rate
        + usage.output * price.output
        + usage.reasoning * price.reasoning_rate
    )
    char_part = usage.characters * (price.per_1m_chars or 0)  # µ$ × 1M (characters per price unit)
    whole = price.per_request + (usage.images * price.image_rate(usage.image_tier) if usage.images else 0)
    return (
        (token_part + char_part + whole * TOKENS_PER_PRICE_UNIT) * SECONDS_PER_MINUTE
        + usage.audio_seconds * (price.per_minute_audio or 0) * TOKENS_PER_PRICE_UNIT
    ) * multiplier_bp


def hold_amount(prompt_tokens: int, max_output_tokens: int, price: Price, multiplier_bp: int = BP_ONE,
                units: Usage | None = None) -> int:
    """The most a request can cost: every prompt token at the dearest input rate, every completion
    token at the dearest output rate, plus the non-token `units` (images, characters, seconds) it
    asks for, rounded up to a whole µ$. Never less than any settle within those counts, and never
    zero for a request that can cost anything."""
    worst_in = max(price.input, price.cache_read_rate, price.cache_write_rate)
    worst_out = max(price.output, price.reasoning_rate)
    worst = Price(model=price.model, input=worst_in, output=worst_out, per_request=price.per_request,
                  per_image=price.per_image, image_prices=price.image_prices, per_1m_chars=price.per_1m_chars,
                  per_minute_audio=price.per_minute_audio)
    units = units or Usage()
    usage = Usage(input=prompt_tokens, output=max_output_tokens, images=units.images, image_tier=units.image_tier,
                  characters=units.characters, audio_seconds=units.audio_seconds)
    return -(-_scaled(usage, worst, multiplier_bp) // SCALE)


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


CENT = MICRO_PER_USD // 100


def usd_text(micro: int) -> str:
    """How an amount reads to people (consoles, emails, chart axes): cents from a cent up, with
    thousands separators ("$12,345.67"); below a cent three significant digits ("$0.000105"), so no
    non-zero amount reads as "$0.00". `micro_to_usd` is the exact amount (hover, CSV); static/money.js
    is this same rule for the charts."""
    sign = "-" if micro < 0 else ""
    size = abs(micro)
    if size >= CENT:
        whole, cents = divmod(round_half_up(size, CENT), 100)
        return f"{sign}${whole:,}.{cents:02d}"
    if size == 0:
        return "$0.00"
    unit = 10 ** max(len(str(size)) - 3, 0)
    shown = round_half_up(size, unit) * unit
    if shown >= CENT:
        return f"{sign}$0.01"
    return f"{sign}$0." + f"{shown:06d}".rstrip("0")
