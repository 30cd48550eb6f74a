"""Channel settings, typed per channel type: strict on save (unknown key, wrong type refused, naming
the key), lenient on load (old rows keep what still decodes), and unchanged on the snapshot wire."""
from __future__ import annotations

import pytest

from relay.adapters import REGISTRY
from relay.channel_config import (
    CONFIG_TYPES,
    AnthropicConfig,
    AzureConfig,
    ChannelConfig,
    ConfigError,
    GeminiConfig,
    OpenAIConfig,
    load_config,
    parse_config,
)
from relay.settings import Timeouts
from relay.snapshot import Bans, ChannelKeyView, ChannelView, Snapshot
from relay.upstream import timeouts_for


def test_every_channel_type_has_its_settings_type():
    assert set(CONFIG_TYPES) == set(REGISTRY)


@pytest.mark.parametrize("kind, raw, check", [
    ("openai", {"max_tokens_field": "max_completion_tokens", "key_selection": "random"},
     lambda c: isinstance(c, OpenAIConfig) and c.output_limit_field == "max_completion_tokens" and c.key_selection == "random"),
    ("azure", {"api_version": "2025-01-01-preview", "max_tokens_field": "max_tokens"},
     lambda c: isinstance(c, AzureConfig) and c.api_version == "2025-01-01-preview"
     and c.responses_api_version == "2025-04-01-preview" and c.output_limit_field == "max_tokens"),
    ("anthropic", {"default_max_tokens": 8192, "timeouts": {"first_byte": 30, "idle": 2.5}},
     lambda c: isinstance(c, AnthropicConfig) and c.default_max_tokens == 8192 and c.timeouts is not None
     and c.timeouts.given() == {"first_byte": 30.0, "idle": 2.5}),
    ("gemini", {"probe_model": "gemini-2.0-flash", "probe_endpoint": "chat"},
     lambda c: isinstance(c, GeminiConfig) and (c.probe_model, c.probe_endpoint) == ("gemini-2.0-flash", "chat")),
    ("openai", {}, lambda c: c == OpenAIConfig() and c.output_limit_field is None and c.timeouts is None),
    ("azure", None, lambda c: c == AzureConfig()),
])
def test_valid_settings_decode_to_their_type(kind, raw, check):
    assert check(parse_config(kind, raw))


@pytest.mark.parametrize("kind, raw, key", [
    ("openai", {"api_version": "2024-06-01"}, "api_version"),  # an Azure setting on an OpenAI channel
    ("anthropic", {"max_tokens_field": "max_tokens"}, "max_tokens_field"),
    ("gemini", {"default_max_tokens": 10}, "default_max_tokens"),
    ("azure", {"api_verison": "2024-06-01"}, "api_verison"),  # a typo
])
def test_an_unknown_key_is_refused_naming_it(kind, raw, key):
    with pytest.raises(ConfigError) as refused:
        parse_config(kind, raw)
    assert refused.value.key == key
    assert f"config.{key}" in refused.value.message and kind in refused.value.message


@pytest.mark.parametrize("kind, raw, key", [
    ("azure", {"api_version": 20240601}, "api_version"),
    ("anthropic", {"default_max_tokens": "lots"}, "default_max_tokens"),
    ("anthropic", {"default_max_tokens": 0}, "default_max_tokens"),
    ("openai", {"max_tokens_field": "max_output_tokens"}, "max_tokens_field"),
    ("openai", {"key_selection": "least_used"}, "key_selection"),
    ("openai", {"timeouts": {"first_byte": -1}}, "timeouts.first_byte"),
    ("openai", {"timeouts": {"first_byte": True}}, "timeouts.first_byte"),
    ("openai", {"timeouts": {"frist_byte": 3}}, None),  # nested unknown key: msgspec names the object
    ("gemini", {"probe_model": ""}, "probe_model"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_it(kind, raw, key):
    with pytest.raises(ConfigError) as refused:
        parse_config(kind, raw)
    if key is not None:
        assert refused.value.key == key and f"config.{key}" in refused.value.message
    else:
        assert "frist_byte" in refused.value.message


def test_settings_that_are_not_an_object_are_refused():
    with pytest.raises(ConfigError):
        parse_config("openai", ["api_version"])


def test_old_rows_keep_what_still_decodes_and_drop_the_rest():
    stored = {"api_version": "2024-06-01", "default_max_tokens": 5, "legacy_flag": True, "max_tokens_field": 7,
              "timeouts": {"idle": 9}}
    config = load_config("azure", stored)
    assert config == AzureConfig(api_version="2024-06-01", timeouts=parse_config("azure", {"timeouts": {"idle": 9}}).timeouts)
    assert load_config("openai", "not an object") == OpenAIConfig()
    assert load_config("no-such-type", {"key_selection": "random", "x": 1}) == ChannelConfig(key_selection="random")


def test_the_snapshot_carries_settings_as_the_same_json_object():
    channel = ChannelView(id=1, name="c", type="azure", base_url="https://r.openai.azure.com", models=("m",),
                          keys=(ChannelKeyView(id=2, secret="s"),), config=parse_config("azure", {"api_version": "2024-06-01"}))
    snapshot = Snapshot(version=1, groups={}, prices={}, channels=(channel,), bans=Bans())
    payload = snapshot.to_payload(lambda s: s)
    assert payload["channels"][0]["config"] == {"api_version": "2024-06-01"}
    assert Snapshot.from_payload(payload, lambda s: s).channels[0].config == channel.config
    # A payload from a relay built before typed settings (a free dict with an odd key) still loads.
    payload["channels"][0]["config"] = {"api_version": "2024-06-01", "whatever": 1}
    assert Snapshot.from_payload(payload, lambda s: s).channels[0].config == channel.config


def test_channel_timeouts_override_only_what_they_set():
    defaults = Timeouts()
    channel = ChannelView(id=1, name="c", type="openai", base_url="http://x", models=("m",), keys=(),
                          config=parse_config("openai", {"timeouts": {"first_byte": 0.3}}))
    assert timeouts_for(channel, defaults) == Timeouts(first_byte=0.3)
    plain = ChannelView(id=1, name="c", type="openai", base_url="http://x", models=("m",), keys=())
    assert timeouts_for(plain, defaults) is defaults
