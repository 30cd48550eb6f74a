"""One `switchboard up` for the whole relay API suite (the conformance matrix and the other
endpoints), with one fake upstream per channel type and one channel of each type serving every
model the suite uses. Each test module funds a customer of its own, so charges never mix."""
from __future__ import annotations

import pytest

from tests.e2e.api.batch import cli_all
from tests.e2e.api.conformance import CHANNELS, PRICE, PUBLIC_MODEL, UPSTREAM_MODEL, Fakes
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.azure_server import FakeAzure
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway import Gateway

# Per channel type: (models served as they are, public=upstream mappings)
SERVED = {
    "openai": ("gpt-3.5-turbo-instruct,dall-e-3,gpt-image-1,tts-1,whisper-1,omni-moderation-latest,gpt-4o",
               "my-embed=text-embedding-3-small"),
    "azure": ("", "az-whisper=whisper-deploy,az-responses=resp-deploy"),
    "anthropic": ("", "claude-x=claude-sonnet-4-5"),
    "gemini": ("", "gem-x=gemini-2.5-flash"),
}
PRICES = [
    *[(PUBLIC_MODEL[c], "--input", PRICE[0], "--output", PRICE[1], "--cache-read", PRICE[2], "--cache-write", PRICE[3]) for c in CHANNELS],
    ("gpt-3.5-turbo-instruct", "--input", "1.5", "--output", "2"),
    ("my-embed", "--input", "0.02", "--output", "0"),
    ("dall-e-3", "--image-prices", '{"1024x1024/standard": "0.04", "1024x1024/hd": "0.08", "1792x1024/*": "0.12"}', "--per-image", "0.05"),
    ("gpt-image-1", "--input", "5", "--output", "40"),
    ("tts-1", "--per-1m-chars", "15"),
    ("whisper-1", "--per-minute-audio", "0.006"),
    ("az-whisper", "--per-minute-audio", "0.006"),
    ("omni-moderation-latest", "--per-request", "0.0001"),
    ("gpt-4o", "--input", "2.5", "--output", "10", "--cache-read", "1.25"),
    ("az-responses", "--input", "2.5", "--output", "10"),
    ("claude-x", "--input", "3", "--output", "15"),
    ("gem-x", "--input", "3", "--output", "15", "--max-output-tokens", "8192"),
]


@pytest.fixture(scope="package")
def gateway(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("api-gateway"), {"SWITCHBOARD_MAX_BODY_BYTES": str(256 * 1024)})
    yield gw
    gw.stop()


@pytest.fixture(scope="package")
def fakes():
    made = Fakes(FakeOpenAI(), FakeAzure(), FakeAnthropic(), FakeGemini())
    yield made
    made.close()


@pytest.fixture(scope="package")
def channels(gateway, fakes) -> None:
    commands = []
    for channel in CHANNELS:
        models, mapping = SERVED[channel]
        mapping = ",".join(filter(None, (f"{PUBLIC_MODEL[channel]}={UPSTREAM_MODEL[channel]}", mapping)))
        commands.append(("channel", "add", "--name", f"api-{channel}", "--type", channel, "--base-url", fakes.of(channel).url,
                         "--keys", f"sk-{channel}-upstream", "--models", models, "--model-map", mapping))
    commands += [("price", "set", model, *options, "--now") for model, *options in PRICES]
    cli_all(gateway, commands)


@pytest.fixture(autouse=True)
def fresh(fakes):
    fakes.reset()


def customer(gateway: Gateway, email: str, usd: str) -> str:
    """A funded user of its own; returns an API key."""
    gateway.cli("user", "create", "--email", email)
    _, key = cli_all(gateway, [("topup", "--user", email, "--usd", usd, "--reason", "e2e funds"), ("key", "create", "--user", email)])
    return key["key"]
