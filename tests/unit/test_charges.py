"""The charge written into answers (relay/charges.py): re-encoded small bodies, spliced large ones,
and the final usage event of a stream."""
from __future__ import annotations

import json

import orjson
import pytest

from relay import charges, pricing
from relay.context import json_response

PRICE = pricing.Price("m", 3_000_000, 15_000_000)


def large(usage_first: bool = False, extra: str = "") -> bytes:
    """A body over the re-encode limit whose strings hold braces and a quoted "usage" key."""
    text = 'tricky {"usage": {"cost": 1}} }}} ' * 700
    body = {"object": "list", "data": [{"text": text, "meta": {"usage": {"nested": True}}}], "model": "m",
            "usage": json.loads('{"prompt_tokens": 5' + extra + "}")}
    if usage_first:
        body = {"usage": body.pop("usage"), **body}
    return json.dumps(body, indent=2).encode()


@pytest.mark.parametrize("body", [
    orjson.dumps({"id": "x", "choices": [], "usage": {"prompt_tokens": 5}}),
    large(),
    large(usage_first=True),
    large(extra=', "cost": 9.5'),  # the upstream's own cost: ours must win
])
def test_the_cost_lands_in_the_top_level_usage(body):
    out = json.loads(charges.with_cost(body, 111))
    assert out["usage"]["cost"] == 0.000111 and out["usage"]["cost_micro_usd"] == 111 and out["usage"]["prompt_tokens"] == 5
    if len(body) > charges.REENCODE_LIMIT:
        assert out["data"][0]["meta"]["usage"] == {"nested": True} and out["data"][0]["text"] == json.loads(body)["data"][0]["text"]


def test_an_answer_without_usage_is_left_as_it_came():
    body = orjson.dumps({"data": [{"url": "x"}]})
    assert charges.with_cost(body, 5) is body
    big = b'{"data": "' + b"a" * 20_000 + b'"}'
    assert charges.with_cost(big, 5) is big


def test_the_response_gets_the_header_and_a_right_content_length():
    response = charges.charged_response(json_response(200, orjson.dumps({"usage": {"prompt_tokens": 1}})), 42)
    headers = dict(response.headers)
    assert headers["x-switchboard-cost-micro-usd"] == "42" and int(headers["Content-Length"]) == len(response.body[0])
    audio = charges.charged_response(charges.Response(200, [("Content-Type", "audio/mpeg"), ("Content-Length", "3")], [b"mp3"]), 7)
    assert audio.body == [b"mp3"] and dict(audio.headers)["x-switchboard-cost-micro-usd"] == "7"


def test_the_event_with_the_final_usage_carries_the_cost():
    usage = pricing.Usage(input=12, output=5)
    cost = pricing.cost(usage, PRICE, 10_000)
    openai = b'data: {"choices":[],"usage":{"prompt_tokens":12}}\n\ndata: [DONE]\n\n'
    out = charges.annotate_event(openai, usage, PRICE, 10_000)
    assert out.endswith(b"data: [DONE]\n\n") and json.loads(out.split(b"\n\n")[0][6:])["usage"]["cost_micro_usd"] == cost
    anthropic = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":5}}\n\n'
    out = charges.annotate_event(anthropic, usage, PRICE, 10_000)
    assert out.startswith(b"event: message_delta\ndata: ") and b'"cost_micro_usd":%d' % cost in out
    responses = b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":12}}}\n\n'
    assert json.loads(charges.annotate_event(responses, usage, PRICE, 10_000).split(b"data: ")[1])["response"]["usage"]["cost"] == cost / 1e6
