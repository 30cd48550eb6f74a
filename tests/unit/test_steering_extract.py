"""Taking the caller's steering fields out of a body (relay/steering.py `extract`)."""
from __future__ import annotations

import orjson
import pytest

from relay.errors import ANTHROPIC, OPENAI, RelayError
from relay.steering import Preferences, Steering, extract


def test_a_body_without_steering_is_left_as_it_is():
    body = b'{"model": "m", "messages": [{"role": "user", "content": "say \\"models\\" and provider"}]}'
    steer, out = extract(body, OPENAI, False)
    assert steer is None and out is body
    nested = b'{"model": "m", "tools": [{"function": {"parameters": {"properties": {"provider": {}}}}}]}'
    assert extract(nested, OPENAI, False) == (None, nested)  # only top-level fields steer
    assert extract(b'{"models": ', OPENAI, False) == (None, b'{"models": ')  # the endpoint refuses what does not parse


def test_the_fields_leave_the_body_and_a_missing_model_is_the_first_of_the_list():
    steer, out = extract(orjson.dumps({"models": ["a", "b"], "provider": {"only": ["EU"], "allow_fallbacks": False}, "n": 1}), OPENAI, False)
    assert steer == Steering(("a", "b"), Preferences(only=("eu",), allow_fallbacks=False))
    assert orjson.loads(out) == {"n": 1, "model": "a"}
    _, gemini = extract(orjson.dumps({"models": ["a"], "contents": []}), OPENAI, True)
    assert orjson.loads(gemini) == {"contents": []}  # Gemini names its model in the URL


@pytest.mark.parametrize("fields,param", [
    ({"models": []}, "models"),
    ({"models": ["a"] * 9}, "models"),
    ({"models": "a"}, "models"),
    ({"provider": {"order": ["x" * 101]}}, "provider.order[0]"),
    ({"provider": {"max_price": {"prompt": 1, "image": 2}}}, "provider.max_price"),
], ids=["empty", "too-many", "not-a-list", "long-name", "unknown-price"])
def test_bad_steering_is_a_400_naming_the_field(fields, param):
    with pytest.raises(RelayError) as refused:
        extract(orjson.dumps({"model": "m", **fields}), OPENAI, False)
    assert refused.value.status == 400 and refused.value.param == param


def test_an_anthropic_caller_reads_the_field_as_anthropic_writes_it():
    with pytest.raises(RelayError) as refused:
        extract(orjson.dumps({"model": "m", "provider": {"only": [1]}}), ANTHROPIC, False)
    assert refused.value.message.startswith("provider.only.0:")
