"""The money arithmetic: exact integers, one half-up rounding, multipliers, fallbacks, holds."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from relay.pricing import Price, Usage, cost, hold_amount, micro_to_usd, round_half_up, usd_to_micro

GPT4O = Price(model="gpt-4o", input=2_500_000, output=10_000_000, cache_read=1_250_000)


def test_a_million_input_tokens_cost_the_listed_price():
    assert cost(Usage(input=1_000_000), GPT4O) == 2_500_000


def test_cached_tokens_use_the_cache_price_and_reasoning_falls_back_to_output():
    usage = Usage(input=1000, cache_read=2000, output=300, reasoning=700)
    # 1000×2.5 + 2000×1.25 + (300+700)×10 = 2500 + 2500 + 10000 = 15000 µ$·M / 1M → 15,000 / 1000
    assert cost(usage, GPT4O) == round_half_up(1000 * 2_500_000 + 2000 * 1_250_000 + 1000 * 10_000_000, 1_000_000)


def test_missing_cache_prices_bill_as_input():
    plain = Price(model="m", input=1_000_000, output=2_000_000)
    assert cost(Usage(cache_read=10, cache_write=10), plain) == cost(Usage(input=20), plain)


def test_rounding_happens_once_per_request_half_up():
    price = Price(model="m", input=1, output=1)  # 1 µ$ per 1M tokens
    assert cost(Usage(input=499_999), price) == 0
    assert cost(Usage(input=500_000), price) == 1
    # Two quarters add up to a half before rounding: rounding each kind separately would give 0.
    assert cost(Usage(input=250_000, output=250_000), price) == 1


def test_one_rounding_not_per_kind():
    price = Price(model="m", input=1, output=1)
    assert cost(Usage(input=300_000, output=300_000), price) == 1  # 0.6 µ$ → 1; per kind it would be 0+0


def test_group_multiplier_in_basis_points():
    assert cost(Usage(input=1_000_000), GPT4O, multiplier_bp=9_000) == 2_250_000
    assert cost(Usage(input=1_000_000), GPT4O, multiplier_bp=12_500) == 3_125_000


def test_per_request_price_is_multiplied_too():
    price = Price(model="img", input=0, output=0, per_request=40_000)
    assert cost(Usage(), price) == 40_000
    assert cost(Usage(), price, multiplier_bp=5_000) == 20_000


@pytest.mark.parametrize("text,micro", [("2.50", 2_500_000), ("0.000001", 1), ("10", 10_000_000), ("0", 0), ("-1.5", -1_500_000)])
def test_usd_parses_exactly(text, micro):
    assert usd_to_micro(text) == micro


@pytest.mark.parametrize("text", ["0.0000001", "abc", "nan", "inf", ""])
def test_usd_refuses_what_is_not_an_exact_amount(text):
    with pytest.raises(ValueError):
        usd_to_micro(text)


def test_formatting_is_exact():
    assert micro_to_usd(1_234_567) == "$1.234567"
    assert micro_to_usd(1_234_567, 2) == "$1.23"
    assert micro_to_usd(1_235_000, 2) == "$1.24"
    assert micro_to_usd(-5) == "-$0.000005"


counts = st.integers(min_value=0, max_value=2_000_000)
rates = st.integers(min_value=0, max_value=200_000_000)
optional_rates = st.none() | rates
prices = st.builds(
    Price,
    model=st.just("m"),
    input=rates,
    output=rates,
    cache_read=optional_rates,
    cache_write=optional_rates,
    reasoning=optional_rates,
    per_request=st.integers(min_value=0, max_value=1_000_000),
)
usages = st.builds(Usage, input=counts, cache_read=counts, cache_write=counts, output=counts, reasoning=counts)
multipliers = st.integers(min_value=0, max_value=50_000)


@settings(max_examples=300)
@given(usages, prices, multipliers)
def test_cost_is_never_negative(usage, price, bp):
    assert cost(usage, price, bp) >= 0


@settings(max_examples=300)
@given(usages, prices, multipliers, st.sampled_from(["input", "cache_read", "cache_write", "output", "reasoning"]), st.integers(1, 10_000))
def test_cost_is_monotone_in_every_count(usage, price, bp, kind, extra):
    more = Usage(**{**{k: getattr(usage, k) for k in ("input", "cache_read", "cache_write", "output", "reasoning")}, kind: getattr(usage, kind) + extra})
    assert cost(more, price, bp) >= cost(usage, price, bp)


@settings(max_examples=300)
@given(prices, multipliers, st.integers(0, 200_000), st.integers(0, 100_000), st.data())
def test_hold_covers_any_settle_within_its_counts(price, bp, prompt, max_tokens, data):
    """However the prompt splits into cached/uncached and the completion into reasoning/visible,
    the charge never exceeds the hold."""
    cache_read = data.draw(st.integers(0, prompt))
    cache_write = data.draw(st.integers(0, prompt - cache_read))
    output = data.draw(st.integers(0, max_tokens))
    reasoning = data.draw(st.integers(0, max_tokens - output))
    usage = Usage(input=prompt - cache_read - cache_write, cache_read=cache_read, cache_write=cache_write, output=output, reasoning=reasoning)
    assert hold_amount(prompt, max_tokens, price, bp) >= cost(usage, price, bp)


@given(st.integers(0, 10**15), st.integers(1, 10**9))
def test_round_half_up_matches_decimal_rounding(n, d):
    from decimal import ROUND_HALF_UP, Decimal

    assert round_half_up(n, d) == int((Decimal(n) / Decimal(d)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
