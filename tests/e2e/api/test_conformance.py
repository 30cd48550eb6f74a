"""The conformance matrix: (client: openai SDK, anthropic SDK) × (channel type: openai, azure,
anthropic, gemini) × (stream, no stream) × (plain chat, tools over two turns, image in, stop at
max tokens), through a real `switchboard up`. Each request must come back in the client's own
shape with the right stop reason and usage, reach the upstream in the upstream's own shape under
the mapped model name, and be charged exactly."""
from __future__ import annotations

import pytest

from tests.e2e.api import clients
from tests.e2e.api.conftest import customer
from tests.e2e.api.conformance import (
    CHANNELS,
    PUBLIC_MODEL,
    TEXT,
    TIME,
    UPSTREAM_MODEL,
    WEATHER,
    charge,
    expected_usage,
    reply,
    sent_image,
    upstream_requests,
)
from tests.e2e.api.logs import request_log

pytestmark = pytest.mark.e2e

EMAIL = "matrix@example.com"
SCENARIOS = ("text", "tools", "image", "length")
# (request id, channel) of every answered matrix request; charges are checked together at the end,
# as the worker ingests usage once a second.
ANSWERED: list[tuple[str, str]] = []


@pytest.fixture(scope="module")
def key(gateway, channels) -> str:
    return customer(gateway, EMAIL, "50")


def run(client: str, gateway, key: str, model: str, messages: list, stream: bool, options: dict) -> clients.Answer:
    if client == "openai":
        return clients.openai_chat(clients.openai_client(gateway.base_url, key), model, messages, stream, **options)
    return clients.anthropic_chat(clients.anthropic_client(gateway.url, key), model, messages, stream, **options)


def assert_charged(gateway, request_id: str, channel: str) -> None:
    logged = request_log(gateway, request_id)
    assert (logged.status, logged.model, logged.upstream_model) == (200, PUBLIC_MODEL[channel], UPSTREAM_MODEL[channel])
    usage = expected_usage(channel)
    assert (logged.input, logged.cache_read, logged.cache_write, logged.output, logged.reasoning) == (
        usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning)
    assert logged.cost == charge(usage)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_conformance(gateway, fakes, key, client, channel, stream, scenario):
    fake = fakes.of(channel)
    scenario_of = clients.openai_scenario if client == "openai" else clients.anthropic_scenario
    messages, options = scenario_of(scenario)
    words = clients.STOP_WORDS[client]
    usage_seen = clients.seen_usage(client, expected_usage(channel))

    if scenario == "tools":
        fake.push(reply(channel, text="", calls=[("get_weather", WEATHER), ("get_time", TIME)]),
                  reply(channel, text="It is 21°C and 14:05 in Zürich."))
    else:
        fake.push(reply(channel, stop="length" if scenario == "length" else None))
    answer = run(client, gateway, key, PUBLIC_MODEL[channel], messages, stream, options)

    sent = upstream_requests(fakes, channel)
    assert len(sent) == 1
    assert answer.usage == usage_seen
    ANSWERED.append((answer.request_id, channel))
    if channel == "azure":
        assert fakes.azure.azure_requests[-1]["deployment"] == UPSTREAM_MODEL["azure"]
    elif channel == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        assert fakes.gemini.requests[0]["path"] == f"/v1beta/models/{UPSTREAM_MODEL['gemini']}:{method}"
    else:
        assert sent[0]["model"] == UPSTREAM_MODEL[channel]

    if scenario == "tools":
        assert answer.stop == words["tool_calls"]
        assert [(name, args) for _, name, args in answer.calls] == [("get_weather", WEATHER), ("get_time", TIME)]
        assert len({call_id for call_id, _, _ in answer.calls}) == 2
        turn = clients.openai_tool_turn if client == "openai" else clients.anthropic_tool_turn
        results = {"get_weather": {"temp_c": 21}, "get_time": {"time": "14:05"}}
        second = run(client, gateway, key, PUBLIC_MODEL[channel], turn(messages, answer, results), stream,
                     {k: v for k, v in options.items()})
        # The upstream accepted the history (each fake refuses results that do not answer its calls).
        assert second.text == "It is 21°C and 14:05 in Zürich."
        assert second.stop == words["stop"]
        ANSWERED.append((second.request_id, channel))
        return

    assert answer.text == TEXT
    assert answer.calls == []
    assert answer.stop == words["length" if scenario == "length" else "stop"]
    if scenario == "image":
        assert sent_image(channel, sent[0])


def test_every_matrix_request_is_logged_with_both_model_names_and_charged_exactly(gateway):
    if not ANSWERED:
        pytest.skip("runs after the matrix")
    for request_id, channel in ANSWERED:
        assert_charged(gateway, request_id, channel)
    expected = 50_000_000 - sum(charge(expected_usage(channel)) for _, channel in ANSWERED)
    gateway.wait_for_balance(EMAIL, expected)
