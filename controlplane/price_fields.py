"""The price components an operator sets per model, in the order the console shows them.

The console's form and table, and the JSON import/export, are all built from this list: a new
kind of price (per image, per second, …) is one entry here plus its column and service argument.
"""
from __future__ import annotations

from dataclasses import dataclass

PER_MILLION = "$/1M tokens"
PER_REQUEST = "$/request"


@dataclass(frozen=True)
class PriceField:
    name: str  # the ModelPrice attribute and the prices.set_price keyword
    label: str
    unit: str
    hint: str = ""
    required: bool = False

    @property
    def per_million(self) -> bool:
        return self.unit.startswith("$/1M")


PRICE_FIELDS: tuple[PriceField, ...] = (
    PriceField("input", "Input", PER_MILLION, required=True),
    PriceField("cache_read", "Cache read", PER_MILLION, "Empty: billed as input"),
    PriceField("cache_write", "Cache write", PER_MILLION, "Empty: billed as input"),
    PriceField("output", "Output", PER_MILLION, required=True),
    PriceField("reasoning", "Reasoning", PER_MILLION, "Empty: billed as output"),
    PriceField("per_request", "Per request", PER_REQUEST, "Added to every request"),
    # Unit prices (images, speech, transcription); size/quality image tables are set by CLI, API or import.
    PriceField("per_image", "Per image", "$/image", "Images with no size/quality price"),
    PriceField("per_1m_chars", "Speech", "$/1M chars", "Text-to-speech input"),
    PriceField("per_minute_audio", "Transcription", "$/minute", "Billed per second of audio"),
)
