"""Unit prices on both SQL back ends: per image by size/quality (a JSON table), per 1M characters
and per minute of audio are stored as integer µ$, validated, and reach the relay's snapshot."""
from __future__ import annotations

import pytest

from controlplane import snapshot
from controlplane.services import ServiceError, prices
from tests import factories


def test_unit_prices_are_stored_in_micro_dollars_and_reach_the_snapshot(sql_app):
    row = prices.set_price(factories.ACTOR, "dall-e-3", per_image="0.05", image_prices='{"1024x1024/hd": "0.08", "*/standard": "0.04"}',
                           enforce_notice=False)
    assert (row.input, row.output, row.per_image, row.image_prices) == (0, 0, 50_000, {"1024x1024/hd": 80_000, "*/standard": 40_000})
    view = snapshot.price_view(row)
    assert view.image_rate("1024x1024/hd") == 80_000 and view.image_rate("512x512/standard") == 40_000
    assert view.image_rate("512x512/auto") == 50_000
    tts = prices.set_price(factories.ACTOR, "tts-1", per_1m_chars="15", enforce_notice=False)
    whisper = prices.set_price(factories.ACTOR, "whisper-1", per_minute_audio="0.006", enforce_notice=False)
    assert (tts.per_1m_chars, whisper.per_minute_audio) == (15_000_000, 6_000)
    described = prices.describe(row)
    assert described["image_prices_micro_usd"] == {"1024x1024/hd": 80_000, "*/standard": 40_000}


@pytest.mark.parametrize("kwargs,field", [
    ({}, "input"),  # neither token nor unit prices
    ({"input": "1"}, "output"),
    ({"image_prices": "{not json"}, "image_prices"),
    ({"image_prices": '{"1024x1024": "0.04"}'}, "image_prices"),  # no quality part
    ({"image_prices": '{"1024x1024/hd": "-1"}'}, "image_prices"),
    ({"per_1m_chars": "0.0000001"}, "per_1m_chars"),  # finer than a micro-dollar
])
def test_invalid_unit_prices_are_refused(sql_app, kwargs, field):
    with pytest.raises(ServiceError) as refused:
        prices.set_price(factories.ACTOR, "m", enforce_notice=False, **kwargs)
    assert refused.value.field == field
