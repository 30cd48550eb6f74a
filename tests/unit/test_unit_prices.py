"""Prices by unit other than tokens: images by size and quality, speech by character,
transcription per second of a per-minute price — exact integers, one rounding with everything
else, holds that cover them, and the snapshot form of such prices."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from relay.pricing import Price, Usage, cost, hold_amount, image_table
from relay.snapshot import Snapshot, empty_snapshot

DALLE = Price(model="dall-e-3", input=0, output=0, per_image=50_000,
              image_prices=image_table({"1024x1024/standard": 40_000, "1024x1024/hd": 80_000, "1792x1024/*": 120_000, "*/hd": 90_000}))


@pytest.mark.parametrize("tier,rate", [
    ("1024x1024/standard", 40_000),  # exact
    ("1024x1024/hd", 80_000),  # exact beats */hd
    ("1792x1024/hd", 120_000),  # SIZE/* beats */QUALITY
    ("512x512/hd", 90_000),  # */QUALITY
    ("512x512/standard", 50_000),  # nothing matches: the per-image price
])
def test_image_tiers_are_looked_up_most_specific_first(tier, rate):
    assert DALLE.image_rate(tier) == rate
    assert cost(Usage(images=3, image_tier=tier), DALLE) == 3 * rate


def test_speech_is_priced_per_million_characters():
    tts = Price(model="tts-1", input=0, output=0, per_1m_chars=15_000_000)
    assert cost(Usage(characters=1_000_000), tts) == 15_000_000
    assert cost(Usage(characters=33), tts) == 495  # 33 × 15 µ$
    assert cost(Usage(characters=1), Price(model="m", input=0, output=0, per_1m_chars=400_000)) == 0  # 0.4 µ$ rounds down


def test_transcription_bills_whole_seconds_of_a_per_minute_price():
    whisper = Price(model="whisper-1", input=0, output=0, per_minute_audio=6_000)
    assert cost(Usage(audio_seconds=60), whisper) == 6_000
    assert cost(Usage(audio_seconds=1), whisper) == 100
    assert cost(Usage(audio_seconds=1), Price(model="m", input=0, output=0, per_minute_audio=10)) == 0  # 1/6 µ$
    assert cost(Usage(audio_seconds=3), Price(model="m", input=0, output=0, per_minute_audio=10)) == 1  # 1/2 µ$ rounds half up


def test_units_tokens_and_per_request_round_once_together():
    mixed = Price(model="m", input=1, output=0, per_request=0, per_minute_audio=10)
    # 300,000 tokens × 1 µ$/1M = 0.3 µ$, and 2 s × 10 µ$/min = 0.333… µ$: 0 and 0 apart, 1 together.
    assert cost(Usage(input=300_000), mixed) == 0 and cost(Usage(audio_seconds=2), mixed) == 0
    assert cost(Usage(input=300_000, audio_seconds=2), mixed) == 1


def test_group_multipliers_apply_to_units():
    assert cost(Usage(images=1, image_tier="1024x1024/hd"), DALLE, multiplier_bp=8_500) == 68_000


@given(images=st.integers(0, 10), chars=st.integers(0, 10_000), seconds=st.integers(0, 7_200), tokens=st.integers(0, 10_000))
def test_a_hold_covers_any_charge_within_its_counts(images, chars, seconds, tokens):
    price = Price(model="m", input=3_000_000, output=15_000_000, per_request=7, per_image=40_001, per_1m_chars=15_000_000,
                  per_minute_audio=6_001)
    units = Usage(images=images, image_tier="x/y", characters=chars, audio_seconds=seconds)
    held = hold_amount(tokens, tokens, price, 10_000, units)
    charged = cost(Usage(input=tokens, output=tokens, images=images, image_tier="x/y", characters=chars, audio_seconds=seconds), price)
    assert held >= charged


def test_a_hold_for_anything_that_costs_is_never_zero():
    cheap = Price(model="embed", input=20_000, output=0)
    assert cost(Usage(input=10), cheap) == 0
    assert hold_amount(10, 0, cheap) == 1
    assert hold_amount(10, 0, Price(model="free", input=0, output=0)) == 0


def test_unit_prices_survive_the_snapshot_payload():
    snap = empty_snapshot()
    snap.prices = {"dall-e-3": (DALLE,)}
    back = Snapshot.from_payload(snap.to_payload(encrypt=str), decrypt=str)
    assert back.prices["dall-e-3"] == (DALLE,)
    assert back.prices["dall-e-3"][0].image_rate("1024x1024/hd") == 80_000
