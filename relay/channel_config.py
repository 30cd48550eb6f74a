"""A channel's type-specific settings (`config`), typed: one frozen msgspec Struct per channel type.

Stored as a JSON object on the channel row and carried as that object in the routing snapshot; each
relay decodes it here once, when it decodes the snapshot, so the hot path reads attributes, never
strings out of a dict. Two ways in:

- `parse_config` (the control plane, on save) is strict: an unknown key or a value of the wrong type
  is refused with a `ConfigError` naming the key, so a typo never silently does nothing.
- `load_config` (snapshot build and decode) is lenient: rows saved before settings were checked may
  hold keys of other types or odd values. Each known key that decodes on its own is kept, anything
  else is dropped (the channel then behaves as it did, when the relay ignored what it could not use).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ChannelTimeouts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Seconds; an unset one keeps the relay's default (relay/settings.py Timeouts)."""

    connect: PositiveSeconds | None = None
    first_byte: PositiveSeconds | None = None
    idle: PositiveSeconds | None = None
    total: PositiveSeconds | None = None

    def given(self) -> dict[str, float]:
        return {name: float(value) for name in self.__struct_fields__ if (value := getattr(self, name)) is not None}


class ChannelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Settings every channel type has."""

    key_selection: Literal["round_robin", "random"] = "round_robin"
    timeouts: ChannelTimeouts | None = None
    probe_model: ModelName | None = None  # what the health probe asks for (default: the first model)
    probe_endpoint: ShortText | None = None  # chat, embeddings, images, … (relay/adapters Operation)
    # Callers may name this channel (its name and its tag) in their provider preferences.
    public: bool = False

    @property
    def output_limit_field(self) -> str | None:
        """The name an OpenAI-shaped upstream wants for the output limit, when the operator set one."""
        return None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = msgspec.to_builtins(self)
        return payload


OutputLimitField = Literal["max_tokens", "max_completion_tokens"]


class OpenAIConfig(ChannelConfig, frozen=True, kw_only=True):
    # OpenAI's reasoning models refuse `max_tokens`; many compatible servers know only it.
    max_tokens_field: OutputLimitField | None = None

    @property
    def output_limit_field(self) -> str | None:
        return self.max_tokens_field


DEFAULT_API_VERSION = "2024-10-21"
DEFAULT_RESPONSES_API_VERSION = "2025-04-01-preview"  # /openai/responses needs a preview version


class AzureConfig(OpenAIConfig, frozen=True, kw_only=True):
    api_version: ShortText = DEFAULT_API_VERSION
    responses_api_version: ShortText = DEFAULT_RESPONSES_API_VERSION


class AnthropicConfig(ChannelConfig, frozen=True, kw_only=True):
    # Anthropic requires max_tokens; a converted OpenAI request without one gets this.
    default_max_tokens: Annotated[int, msgspec.Meta(gt=0, le=10_000_000)] | None = None


class GeminiConfig(ChannelConfig, frozen=True, kw_only=True):
    pass


# Channel type → its settings. A new adapter adds its type here (a unit test checks every type has one).
CONFIG_TYPES: dict[str, type[ChannelConfig]] = {
    "openai": OpenAIConfig,
    "azure": AzureConfig,
    "anthropic": AnthropicConfig,
    "gemini": GeminiConfig,
}

NO_CONFIG = ChannelConfig()


class ConfigError(ValueError):
    """A setting the channel type does not have, or a value of the wrong type; `key` names it."""

    def __init__(self, key: str | None, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def config_type(channel_type: str) -> type[ChannelConfig]:
    return CONFIG_TYPES.get(channel_type, ChannelConfig)


def known_keys(channel_type: str) -> tuple[str, ...]:
    return config_type(channel_type).__struct_fields__


_PATH = re.compile(r"at `\$\.([A-Za-z0-9_.]+)`")


def parse_config(channel_type: str, raw: object) -> ChannelConfig:
    """Strictly: every key known to this channel type, every value of its type (ConfigError)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(None, 'Settings are a JSON object, like {"api_version": "2024-06-01"}.')
    cls = config_type(channel_type)
    for key in raw:
        if key not in cls.__struct_fields__:
            raise ConfigError(str(key), f"config.{key} is not a setting of {channel_type} channels; "
                                        f"they have: {', '.join(cls.__struct_fields__)}.")
    try:
        return msgspec.convert(raw, type=cls)
    except msgspec.ValidationError as error:
        found = _PATH.search(str(error))
        key = found.group(1) if found else None
        # msgspec's wording, minus its markup: "Expected float, got str", "Expected int >= 1".
        detail = _PATH.sub("", str(error)).rstrip(" -").replace(" | null", "").replace("`", "")
        raise ConfigError(key, f"config.{key}: {detail}." if key else f"config: {detail}.") from None


def load_config(channel_type: str, raw: object) -> ChannelConfig:
    """Leniently (stored rows, snapshots): keep each known key whose value decodes, drop the rest."""
    cls = config_type(channel_type)
    if not isinstance(raw, dict) or not raw:
        return cls()
    try:
        return msgspec.convert(raw, type=cls)
    except msgspec.ValidationError:
        pass
    kept = {}
    for key, value in raw.items():
        if key in cls.__struct_fields__:
            try:
                msgspec.convert({key: value}, type=cls)
            except msgspec.ValidationError:
                continue
            kept[key] = value
    return msgspec.convert(kept, type=cls)
